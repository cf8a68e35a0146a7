package qemu

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
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

// FuzzConsoleLines: whatever the guest prints, logged lines are valid UTF-8
// without control characters other than tab, no line exceeds maxLine bytes
// of input, and no byte other than line ends is lost.
func FuzzConsoleLines(f *testing.F) {
	f.Add([]byte("a\r\nb\x1b[0m\n\xff\x00"), 3)
	f.Add([]byte("\r\r\n\n"), 1)
	f.Fuzz(func(t *testing.T, data []byte, chunk int) {
		if chunk < 1 {
			chunk = 1
		}
		var s lineSplitter
		kept := 0
		check := func(raw []byte) {
			if len(raw) > maxLine {
				t.Fatalf("line of %d bytes", len(raw))
			}
			kept += len(raw)
			line := sanitize(raw)
			if !utf8.ValidString(line) {
				t.Fatalf("invalid UTF-8 in %q", line)
			}
			for _, r := range line {
				if (r < 0x20 && r != '\t') || r == 0x7f {
					t.Fatalf("control character %U in %q", r, line)
				}
			}
		}
		for i := 0; i < len(data); i += chunk {
			s.write(data[i:min(i+chunk, len(data))], check)
		}
		kept += len(s.partial)
		ends := 0
		for _, b := range data {
			if b == '\r' || b == '\n' {
				ends++
			}
		}
		if kept != len(data)-ends {
			t.Fatalf("kept %d bytes of %d with %d line ends", kept, len(data), ends)
		}
	})
}
