package nanoswitch

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"
	"time"
)

// The classic libpcap file format (https://www.tcpdump.org/manpages/pcap-savefile.5.html,
// draft-ietf-opsawg-pcap): a 24-byte file header, then per packet a 16-byte
// record header and the packet's bytes. Fields are written little-endian;
// readers tell the byte order from the magic number.
const (
	pcapMagic        = 0xa1b2c3d4 // microsecond timestamps
	pcapVersionMajor = 2
	pcapVersionMinor = 4
	pcapSnapLen      = MaxFrameSize
	pcapLinkEthernet = 1 // LINKTYPE_ETHERNET
)

// pcapWriter appends frames to a capture file. Each record is one write
// system call, so a reader following the file sees whole records.
type pcapWriter struct {
	mu  sync.Mutex
	f   *os.File
	buf []byte
	err error // the first write error; later frames are not written
}

// newPcap creates (or truncates) path and writes the file header.
func newPcap(path string) (*pcapWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create capture: %w", err)
	}
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], pcapMagic)
	binary.LittleEndian.PutUint16(h[4:], pcapVersionMajor)
	binary.LittleEndian.PutUint16(h[6:], pcapVersionMinor)
	// h[8:12] thiszone = 0 (UTC), h[12:16] sigfigs = 0
	binary.LittleEndian.PutUint32(h[16:], pcapSnapLen)
	binary.LittleEndian.PutUint32(h[20:], pcapLinkEthernet)
	if _, err := f.Write(h[:]); err != nil {
		f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("create capture %s: %w", path, err)
	}
	return &pcapWriter{f: f}, nil
}

// write records one frame with the current time.
func (w *pcapWriter) write(frame []byte) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	w.buf = appendPcapRecord(w.buf[:0], now, frame)
	_, w.err = w.f.Write(w.buf)
}

// appendPcapRecord appends a record header and frame to b.
func appendPcapRecord(b []byte, t time.Time, frame []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(t.Unix()))
	b = binary.LittleEndian.AppendUint32(b, uint32(t.Nanosecond()/1000))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(frame))) // captured length
	b = binary.LittleEndian.AppendUint32(b, uint32(len(frame))) // original length
	return append(b, frame...)
}

// close closes the file and returns the first error met while writing.
func (w *pcapWriter) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	err := w.f.Close()
	if w.err != nil {
		return fmt.Errorf("write capture %s: %w", w.f.Name(), w.err)
	}
	if err != nil {
		return fmt.Errorf("close capture: %w", err)
	}
	return nil
}
