package nanoswitch

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// QEMU's stream and socket netdevs send each Ethernet frame (without FCS) as a
// 4-byte big-endian length followed by the frame. The switch keeps frames in
// that form end to end: a frame read from one port is written to the others
// as the same bytes, prefix included.

// hdrLen is the length prefix; ethLen the Ethernet header (two MACs and the
// EtherType).
const (
	hdrLen = 4
	ethLen = 14
)

// MaxFrameSize is the largest frame a port accepts, in bytes without the
// length prefix: QEMU's own limit for a received packet (NET_BUFSIZE,
// 4096 + 65536). A longer length means the stream is out of step and the
// connection is dropped.
const MaxFrameSize = 4096 + 65536

// errFrameTooLong reports a length prefix above MaxFrameSize.
var errFrameTooLong = errors.New("frame length above the maximum")

// frameReader reads length-prefixed frames from a stream.
type frameReader struct {
	r *bufio.Reader
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// next returns the next frame as a new buffer holding the length prefix and
// the frame. It returns io.EOF at a clean end between frames and
// io.ErrUnexpectedEOF in the middle of one.
func (fr *frameReader) next() ([]byte, error) {
	var hdr [hdrLen]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("read frame: length %d: %w (%d)", n, errFrameTooLong, MaxFrameSize)
	}
	buf := make([]byte, hdrLen+int(n))
	copy(buf, hdr[:])
	if _, err := io.ReadFull(fr.r, buf[hdrLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read frame of %d bytes: %w", n, err)
	}
	return buf, nil
}

// encodeFrame returns frame with its length prefix, in a new buffer.
func encodeFrame(frame []byte) []byte {
	buf := make([]byte, hdrLen+len(frame))
	binary.BigEndian.PutUint32(buf, uint32(len(frame)))
	copy(buf[hdrLen:], frame)
	return buf
}
