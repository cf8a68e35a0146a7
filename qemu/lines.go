package qemu

import (
	"strings"
	"unicode/utf8"
)

// lineRing keeps the last lines written to it. It is not safe for
// concurrent use; its owner locks.
type lineRing struct {
	lines []string
	next  int  // index of the slot the next line goes to
	full  bool // every slot holds a line
}

func newLineRing(n int) lineRing { return lineRing{lines: make([]string, n)} }

func (r *lineRing) add(line string) {
	r.lines[r.next] = line
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

// tail returns the last n lines (all of them for n <= 0), oldest first.
func (r *lineRing) tail(n int) []string {
	all := r.lines[:r.next]
	if r.full {
		all = append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
	}
	if n > 0 && n < len(all) {
		all = all[len(all)-n:]
	}
	return append([]string(nil), all...)
}

// maxLine is the longest line kept whole; longer ones are cut, so that a
// stream without line ends cannot grow a line (and its matching) forever.
const maxLine = 16 << 10

// lineSplitter cuts a byte stream into lines at "\n", "\r\n" or a lone "\r"
// (firmware redraws lines with it), and after maxLine bytes.
type lineSplitter struct {
	partial []byte
	lastCR  bool
}

// write feeds p and calls line for every complete line, without its end.
func (s *lineSplitter) write(p []byte, line func([]byte)) {
	for _, b := range p {
		switch {
		case b == '\n' && s.lastCR:
			s.lastCR = false
		case b == '\n' || b == '\r':
			line(s.partial)
			s.partial = s.partial[:0]
			s.lastCR = b == '\r'
		default:
			s.partial = append(s.partial, b)
			s.lastCR = false
			if len(s.partial) == maxLine {
				line(s.partial)
				s.partial = s.partial[:0]
			}
		}
	}
}

// sanitize makes a console line safe for logs and terminals: control
// characters other than tab become caret notation (ESC is "^["), invalid
// UTF-8 becomes U+FFFD.
func sanitize(b []byte) string {
	clean := true
	for _, c := range b {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			clean = false
			break
		}
	}
	if clean && utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	for _, c := range b {
		switch {
		case c == 0x7f:
			sb.WriteString("^?")
		case c < 0x20 && c != '\t':
			sb.WriteByte('^')
			sb.WriteByte(c + '@')
		default:
			sb.WriteByte(c)
		}
	}
	return strings.ToValidUTF8(sb.String(), "\uFFFD")
}
