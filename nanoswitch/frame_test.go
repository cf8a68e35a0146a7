package nanoswitch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestFrameReader(t *testing.T) {
	frames := [][]byte{bytes.Repeat([]byte{1}, 60), {}, bytes.Repeat([]byte{2}, 1514)}
	var stream []byte
	for _, f := range frames {
		stream = append(stream, encodeFrame(f)...)
	}
	fr := newFrameReader(bytes.NewReader(stream))
	for i, want := range frames {
		got, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got[hdrLen:], want) || binary.BigEndian.Uint32(got) != uint32(len(want)) {
			t.Fatalf("frame %d: got %d bytes, want %d", i, len(got)-hdrLen, len(want))
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
	_, err := newFrameReader(bytes.NewReader(stream[:10])).next()
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v, want io.ErrUnexpectedEOF", err)
	}
	_, err = newFrameReader(bytes.NewReader([]byte{0xff, 0xff, 0xff, 0xff})).next()
	if !errors.Is(err, errFrameTooLong) {
		t.Errorf("huge length: %v", err)
	}
}

// FuzzFrameReader: whatever the stream, the reader returns frames within
// the limit that re-encode to exactly the bytes it consumed, and stops with
// an error instead of panicking or allocating without bound.
func FuzzFrameReader(f *testing.F) {
	f.Add(append(encodeFrame(make([]byte, 60)), encodeFrame([]byte("abc"))...))
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0, 1, 0x10, 1, 1, 2})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFrameReader(bytes.NewReader(data))
		var again []byte
		for {
			buf, err := fr.next()
			if err != nil {
				if err == io.EOF && len(again) != len(data) {
					t.Fatalf("EOF after %d of %d bytes", len(again), len(data))
				}
				break
			}
			if len(buf)-hdrLen > MaxFrameSize {
				t.Fatalf("frame of %d bytes", len(buf)-hdrLen)
			}
			again = append(again, encodeFrame(buf[hdrLen:])...)
		}
		if !bytes.HasPrefix(data, again) {
			t.Fatal("re-encoded frames differ from the stream")
		}
	})
}
