package swtpm

import (
	"fmt"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	var tl tail
	for i := range 2000 {
		fmt.Fprintf(&tl, "line %d\n", i)
	}
	got := tl.String()
	if len(got) > tailBytes || !strings.HasPrefix(got, "line ") || !strings.HasSuffix(got, "line 1999\n") {
		t.Errorf("tail: %d bytes, starts %q, ends %q", len(got), got[:10], got[len(got)-10:])
	}
}

func TestOneLine(t *testing.T) {
	in := strings.Repeat("early\n", 20) + "\n  " + strings.Repeat("x", 1000) + "  \nlast\n"
	got := oneLine(in)
	if strings.Contains(got, "\n") || strings.Count(got, " | ") != 11 || !strings.HasSuffix(got, "x… | last") {
		t.Errorf("oneLine = %q", got)
	}
}
