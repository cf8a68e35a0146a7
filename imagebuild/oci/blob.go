package oci

import (
	"bytes"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobFile opens the blob of d for reading without verifying its content: the
// digest must be addressable (CheckDigest), the file must exist, be regular
// and have exactly d.Size bytes. The caller owns the file; it is the blob
// itself (not a copy), so it can be reflinked or mapped.
func (l *Layout) BlobFile(d ispec.Descriptor) (*os.File, error) {
	f, err := l.openBlobFile(d)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d.Digest, err)
	}
	return f, nil
}

func (l *Layout) openBlobFile(d ispec.Descriptor) (*os.File, error) {
	if d.Size < 0 {
		return nil, fmt.Errorf("%w: descriptor has negative size %d", ErrLayout, d.Size)
	}
	p, err := l.BlobPath(d.Digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: blob file is missing", ErrLayout)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: blob is not a regular file (%s)", ErrLayout, fi.Mode().Type())
	}
	if fi.Size() != d.Size {
		f.Close()
		return nil, fmt.Errorf("%w: blob file has %d bytes, descriptor says %d", ErrVerify, fi.Size(), d.Size)
	}
	return f, nil
}

// OpenBlob opens the blob of d for verified reading. Reads stream straight
// from the file; the digest and the size are checked as the data passes, and
// at the end a mismatch is returned instead of io.EOF (wrapping ErrVerify).
// Data read before that error is unverified: act on it only after io.EOF.
func (l *Layout) OpenBlob(d ispec.Descriptor) (io.ReadCloser, error) {
	f, err := l.openBlobFile(d)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", d.Digest, err)
	}
	return &verifyingReader{f: f, d: d, h: d.Digest.Algorithm().Hash(), left: d.Size}, nil
}

// ReadBlob reads the whole blob of d, verified, refusing blobs larger than max
// bytes (the descriptor's size is checked before anything is read).
func (l *Layout) ReadBlob(d ispec.Descriptor, max int64) ([]byte, error) {
	if d.Size > max {
		return nil, fmt.Errorf("read blob %s: %w: descriptor says %d bytes, more than the %d allowed", d.Digest, ErrLayout, d.Size, max)
	}
	rc, err := l.OpenBlob(d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	buf.Grow(int(d.Size))
	if _, err := buf.ReadFrom(rc); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// verifyingReader streams a blob file and checks its digest and size at EOF.
type verifyingReader struct {
	f    *os.File
	d    ispec.Descriptor
	h    hash.Hash
	left int64 // bytes still expected
	err  error // sticky terminal error (io.EOF or a verification error)
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Read at most one byte past the expected end, to notice a longer file.
	if int64(len(p)) > r.left+1 {
		p = p[:r.left+1]
	}
	n, err := r.f.Read(p)
	if int64(n) > r.left {
		r.err = fmt.Errorf("read blob %s: %w: longer than the %d bytes of its descriptor", r.d.Digest, ErrVerify, r.d.Size)
		n = int(r.left)
	}
	r.h.Write(p[:n])
	r.left -= int64(n)
	if r.err != nil {
		return n, r.err
	}
	switch {
	case err == io.EOF && r.left > 0:
		r.err = fmt.Errorf("read blob %s: %w: %d bytes short of the %d of its descriptor", r.d.Digest, ErrVerify, r.left, r.d.Size)
	case err == io.EOF:
		if got := digest.NewDigest(r.d.Digest.Algorithm(), r.h); got != r.d.Digest {
			r.err = fmt.Errorf("read blob %s: %w: content digest is %s", r.d.Digest, ErrVerify, got)
		} else {
			r.err = io.EOF
		}
	case err != nil:
		r.err = fmt.Errorf("read blob %s: %w", r.d.Digest, err)
	}
	return n, r.err
}

func (r *verifyingReader) Close() error { return r.f.Close() }
