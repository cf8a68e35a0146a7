package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestLineSplitter(t *testing.T) {
	var s lineSplitter
	var got []string
	emit := func(b []byte) { got = append(got, string(b)) }
	for _, chunk := range []string{"a\r\nb", "c\n\nd\re\r", "\nf"} {
		s.write([]byte(chunk), emit)
	}
	if want := []string{"a", "bc", "", "d", "e"}; !slices.Equal(got, want) {
		t.Errorf("lines %q, want %q", got, want)
	}
	if string(s.partial) != "f" {
		t.Errorf("partial %q, want f", s.partial)
	}
	got = nil
	s.write([]byte(strings.Repeat("x", 2*maxLine)), emit)
	if len(got) != 2 || len(got[0]) != maxLine || len(s.partial) != 1 {
		t.Errorf("a long line gave %d lines and a partial of %d bytes, want it cut at %d", len(got), len(s.partial), maxLine)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain\ttext":     "plain\ttext",
		"\x1b[2Jhome\x07": "^[[2Jhome^G",
		"del\x7f nul\x00": "del^? nul^@",
		"bad \xff utf8 ä": "bad \uFFFD utf8 ä",
		"Shell> ":         "Shell> ",
	} {
		if got := sanitize([]byte(in)); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLineRing(t *testing.T) {
	r := newLineRing(3)
	if got := r.tail(0); len(got) != 0 {
		t.Errorf("empty tail %q", got)
	}
	for _, l := range []string{"1", "2"} {
		r.add(l)
	}
	if got := r.tail(5); !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("tail %q", got)
	}
	for _, l := range []string{"3", "4", "5"} {
		r.add(l)
	}
	if got := r.tail(0); !slices.Equal(got, []string{"3", "4", "5"}) {
		t.Errorf("tail after wrap %q", got)
	}
	if got := r.tail(2); !slices.Equal(got, []string{"4", "5"}) {
		t.Errorf("tail(2) %q", got)
	}
}
