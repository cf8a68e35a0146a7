package osimage

import (
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchImage writes an image with one uncompressed payload of size bytes of
// pseudo-random data (ChaCha8, fixed seed).
func benchImage(b *testing.B, size int) *Image {
	b.Helper()
	src := filepath.Join(b.TempDir(), "system")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{1}), int64(size)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	dir := filepath.Join(b.TempDir(), "image")
	if err := Write(dir, testInfo, []PayloadSource{{Name: PayloadSystem, Path: src}}); err != nil {
		b.Fatal(err)
	}
	img, err := Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	return img
}

func benchmarkPayload(b *testing.B, open func(*Image) (*Payload, error)) {
	const size = 256 << 20
	img := benchImage(b, size)
	p, err := open(img)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		rc, err := p.Open()
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.Copy(io.Discard, rc); err != nil || n != size {
			b.Fatalf("read %d bytes: %v", n, err)
		}
		rc.Close()
	}
}

// BenchmarkPayloadVerified: verified streaming (SHA-256 per 1 MiB chunk) of a
// 256 MiB payload from the page cache.
func BenchmarkPayloadVerified(b *testing.B) {
	benchmarkPayload(b, func(img *Image) (*Payload, error) { return img.Payload(PayloadSystem) })
}

// BenchmarkPayloadUnverified: the same payload read as the raw blob file, for
// comparison.
func BenchmarkPayloadUnverified(b *testing.B) {
	benchmarkPayload(b, func(img *Image) (*Payload, error) { return img.PayloadUnverified(PayloadSystem) })
}
