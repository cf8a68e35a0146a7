package osimage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Payload is one payload of an image, ready to be opened any number of times.
type Payload struct {
	name string
	size int64
	open func() (io.ReadCloser, error)
}

// Name returns the payload's name.
func (p *Payload) Name() string { return p.name }

// Size returns the payload's uncompressed size in bytes.
func (p *Payload) Size() int64 { return p.size }

// Open opens the payload for reading from its start. For a verified payload
// (Image.Payload) the reader hands out a chunk only after its SHA-256 matched
// the config, and fails mid-stream, naming the payload and chunk, at the
// first chunk that does not; it also fails if the payload is shorter or
// longer than the config says. For an unverified one
// (Image.PayloadUnverified) it returns the raw blob as an *os.File.
func (p *Payload) Open() (io.ReadCloser, error) {
	rc, err := p.open()
	if err != nil {
		return nil, fmt.Errorf("open payload %q: %w", p.name, err)
	}
	return rc, nil
}

// lookup returns the index of the named payload or an ErrNotFound error.
func (i *Image) lookup(name string) (int, error) {
	n, ok := i.find(name)
	if !ok {
		return 0, fmt.Errorf("os image %s: payload %q: %w (the image has %q)", i.layout.Dir(), name, ErrNotFound, i.names())
	}
	return n, nil
}

// Payload returns the named payload for verified reading (any layer media
// type). The error wraps ErrNotFound when there is no such payload.
func (i *Image) Payload(name string) (*Payload, error) {
	n, err := i.lookup(name)
	if err != nil {
		return nil, err
	}
	info, layer := i.config.Payloads[n], i.layers[n]
	open := func() (io.ReadCloser, error) {
		switch layer.MediaType {
		case MediaTypePayload:
			f, err := i.layout.BlobFile(layer)
			if err != nil {
				return nil, err
			}
			return newChunkReader(info, f, f), nil
		case MediaTypePayloadZstd:
			rc, err := i.layout.OpenBlob(layer)
			if err != nil {
				return nil, err
			}
			dec, err := zstd.NewReader(rc, zstd.WithDecoderMaxWindow(MaxZstdWindow))
			if err != nil {
				rc.Close()
				return nil, fmt.Errorf("zstd layer %s: %w", layer.Digest, err)
			}
			return newChunkReader(info, dec, closers{dec.IOReadCloser(), rc}), nil
		}
		return nil, fmt.Errorf("%w: unknown layer media type %q", ErrLayout, layer.MediaType) // parseConfig rules this out
	}
	return &Payload{name: name, size: info.Size, open: open}, nil
}

// PayloadUnverified returns the named payload for unverified reading: its
// Open returns the layer's blob file itself (*os.File, size checked, content
// not), which callers may reflink. Only uncompressed layers qualify; for a
// compressed one the error wraps ErrCompressed.
func (i *Image) PayloadUnverified(name string) (*Payload, error) {
	n, err := i.lookup(name)
	if err != nil {
		return nil, err
	}
	info, layer := i.config.Payloads[n], i.layers[n]
	if layer.MediaType != MediaTypePayload {
		return nil, fmt.Errorf("os image %s: payload %q: unverified access needs an uncompressed layer (%s), this one is %s: %w",
			i.layout.Dir(), name, MediaTypePayload, layer.MediaType, ErrCompressed)
	}
	open := func() (io.ReadCloser, error) { return i.layout.BlobFile(layer) }
	return &Payload{name: name, size: info.Size, open: open}, nil
}

type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// chunkReader hands out a payload chunk by chunk, each after its hash matched.
type chunkReader struct {
	info    PayloadInfo
	r       io.Reader
	c       io.Closer
	buf     []byte
	pending []byte // verified bytes not handed out yet
	chunk   int    // index of the next chunk to read
	off     int64  // payload offset of the next chunk
	err     error  // sticky: io.EOF or the failure
}

func newChunkReader(info PayloadInfo, r io.Reader, c io.Closer) *chunkReader {
	return &chunkReader{info: info, r: r, c: c}
}

// fill reads and verifies the next chunk into pending.
func (c *chunkReader) fill() error {
	name := c.info.Name
	if c.off == c.info.Size {
		var one [1]byte
		n, err := io.ReadFull(c.r, one[:])
		switch {
		case n > 0:
			return fmt.Errorf("read payload %q: %w: longer than the %d bytes the config says", name, ErrVerify, c.info.Size)
		case err == io.EOF:
			return io.EOF
		default:
			return fmt.Errorf("read payload %q: after byte %d: %w", name, c.off, err)
		}
	}
	n := min(c.info.HashChunkSize, c.info.Size-c.off)
	if c.buf == nil {
		c.buf = make([]byte, min(c.info.HashChunkSize, c.info.Size))
	}
	buf := c.buf[:n]
	got, err := io.ReadFull(c.r, buf)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("read payload %q: %w: ends at byte %d, the config says %d bytes", name, ErrVerify, c.off+int64(got), c.info.Size)
	}
	if err != nil {
		return fmt.Errorf("read payload %q: chunk %d: %w", name, c.chunk, err)
	}
	sum := sha256.Sum256(buf)
	if want := c.info.ChunkHashesSHA256[c.chunk]; hex.EncodeToString(sum[:]) != want {
		return fmt.Errorf("read payload %q: chunk %d (bytes %d-%d): %w: sha256 %x, config says %s",
			name, c.chunk, c.off, c.off+n-1, ErrVerify, sum, want)
	}
	c.pending = buf
	c.chunk++
	c.off += n
	return nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.pending) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		c.err = c.fill()
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// WriteTo writes verified chunks straight from the chunk buffer.
func (c *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(c.pending) > 0 {
			n, err := w.Write(c.pending)
			total += int64(n)
			c.pending = c.pending[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if c.err != nil {
			if c.err == io.EOF {
				return total, nil
			}
			return total, c.err
		}
		c.err = c.fill()
	}
}

func (c *chunkReader) Close() error { return c.c.Close() }
