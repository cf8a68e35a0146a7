package swtpm

import (
	"strings"
	"testing"
)

func TestOneLine(t *testing.T) {
	in := strings.Repeat("early\n", 20) + "\n  " + strings.Repeat("x", 1000) + "  \nlast\n"
	got := oneLine(in)
	if strings.Contains(got, "\n") || strings.Count(got, " | ") != 11 || !strings.HasSuffix(got, "x… | last") {
		t.Errorf("oneLine = %q", got)
	}
}
