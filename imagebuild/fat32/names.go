package fat32

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// maxNameLen is the longest long name, in UTF-16 units (§7).
const maxNameLen = 255

// shortChars are the characters allowed in short names besides A–Z and 0–9
// (§6.1); lower case is not allowed, anything else becomes '_'.
const shortChars = "$%'-_@~`!(){}^#&"

// longInvalid are the characters a long name may not contain (§7), besides
// control characters.
const longInvalid = "\"*/:<>?\\|"

// checkName validates one path component as a long file name.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case name == "." || name == "..":
		return fmt.Errorf("name %q is reserved", name)
	case !utf8.ValidString(name):
		return fmt.Errorf("name %q is not UTF-8", name)
	case strings.HasSuffix(name, ".") || strings.HasSuffix(name, " "):
		return fmt.Errorf("name %q ends in a dot or space, which FAT drivers strip", name)
	case len(utf16.Encode([]rune(name))) > maxNameLen:
		return fmt.Errorf("name %q is longer than %d UTF-16 units", name, maxNameLen)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7F || strings.ContainsRune(longInvalid, r) {
			return fmt.Errorf("name %q contains %q, not allowed in FAT names", name, r)
		}
	}
	return nil
}

// shortChar maps a rune to its short-name character and reports whether the
// mapping lost information other than case.
func shortChar(r rune) (byte, bool) {
	switch {
	case r >= 'a' && r <= 'z':
		return byte(r - 'a' + 'A'), true
	case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r < utf8.RuneSelf && strings.ContainsRune(shortChars, r):
		return byte(r), true
	}
	return '_', false
}

// exactShort returns name as a short name when it is one already: upper case,
// 1–8 characters, optionally a dot and 1–3 more, all allowed in short names.
// Such names need no long-name entries.
func exactShort(name string) ([11]byte, bool) {
	var s [11]byte
	base, ext, dotted := strings.Cut(name, ".")
	if base == "" || len(base) > 8 || len(ext) > 3 || (dotted && ext == "") {
		return s, false
	}
	for i := range s {
		s[i] = ' '
	}
	for i, part := range []string{base, ext} {
		for j, r := range part {
			c, ok := shortChar(r)
			if !ok || rune(c) != r {
				return s, false
			}
			s[i*8+j] = c
		}
	}
	return s, true
}

// shortName derives the 8.3 alias of a long name (§7.4, "basis name"
// generation), unique among taken: upper case, characters outside the short
// set as '_', spaces and dots other than the last dropped, the base cut to 8
// and the extension to 3, and a "~N" tail when that lost anything or
// collided.
func shortName(name string, taken map[[11]byte]bool) [11]byte {
	base, ext := name, ""
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		base, ext = name[:i], name[i+1:]
	}
	lossy := false
	conv := func(s string, limit int) []byte {
		var out []byte
		for _, r := range s {
			if r == ' ' || r == '.' {
				lossy = true
				continue
			}
			c, ok := shortChar(r)
			lossy = lossy || !ok
			out = append(out, c)
		}
		if len(out) > limit {
			out, lossy = out[:limit], true
		}
		return out
	}
	b, e := conv(base, 8), conv(ext, 3)
	if len(b) == 0 {
		b, lossy = []byte{'_'}, true
	}
	compose := func(b []byte) [11]byte {
		var s [11]byte
		copy(s[:], "           ")
		copy(s[:8], b)
		copy(s[8:], e)
		return s
	}
	if s := compose(b); !lossy && !taken[s] {
		return s
	}
	for n := 1; ; n++ {
		tail := "~" + strconv.Itoa(n)
		s := compose(append(b[:min(len(b), 8-len(tail)):min(len(b), 8-len(tail))], tail...))
		if !taken[s] {
			return s
		}
	}
}

// checksum is the short-name checksum stored in long-name entries (§7.2).
func checksum(short [11]byte) uint8 {
	var sum uint8
	for _, c := range short {
		sum = (sum>>1 | sum<<7) + c
	}
	return sum
}

// lfnEntries returns the long-name entries for name in on-disk order (the
// last part first), each 32 bytes.
func lfnEntries(name string, short [11]byte) [][]byte {
	u := utf16.Encode([]rune(name))
	n := (len(u) + lfnChars - 1) / lfnChars
	padded := make([]uint16, n*lfnChars)
	for i := range padded {
		switch {
		case i < len(u):
			padded[i] = u[i]
		case i == len(u):
			padded[i] = 0 // terminator, when the name does not fill the last part
		default:
			padded[i] = 0xFFFF
		}
	}
	sum := checksum(short)
	out := make([][]byte, 0, n)
	for part := n; part >= 1; part-- {
		e := lfnEntry{Ord: uint8(part), Attr: attrLongName, Chksum: sum}
		if part == n {
			e.Ord |= lastLongEntry
		}
		c := padded[(part-1)*lfnChars:]
		copy(e.Name1[:], c[0:5])
		copy(e.Name2[:], c[5:11])
		copy(e.Name3[:], c[11:13])
		out = append(out, encode(&e, entrySize))
	}
	return out
}

// checkLabel validates a volume label: at most 11 short-name characters or
// spaces, upper case.
func checkLabel(label string) error {
	if len(label) > 11 {
		return fmt.Errorf("volume label %q is longer than 11 characters", label)
	}
	for _, r := range label {
		if c, ok := shortChar(r); r != ' ' && (!ok || rune(c) != r) {
			return fmt.Errorf("volume label %q: %q is not allowed (A–Z, 0–9, space, %s)", label, r, shortChars)
		}
	}
	return nil
}
