package osimage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/klauspost/compress/zstd"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/qcluster/qcluster/imagebuild/oci"
)

// CompressionZstd is the PayloadSource.Compression value for a zstd layer.
const CompressionZstd = "zstd"

// PayloadSource is a payload for Write.
type PayloadSource struct {
	// Name of the payload, e.g. "kernel.efi" or "system": 1–128 characters of
	// [A-Za-z0-9._-]. Required; unique within an image.
	Name string
	// Path of the regular file holding the payload. Required.
	Path string
	// Compression: "" (default) stores the file as is, placed by reflink, hard
	// link or copy, so it can be read unverified and reflinked again;
	// CompressionZstd stores a zstd stream (smaller, verified reads only).
	Compression string
}

// Placement reports how Write stored one payload.
type Placement struct {
	// Name of the payload.
	Name string
	// Method used to place an uncompressed payload (reflink, hardlink, copy);
	// "" for a compressed one, which is always written anew.
	Method oci.Method
	// Size of the payload in bytes (uncompressed).
	Size int64
	// Layer is the payload's layer descriptor (its Size is the stored size).
	Layer ispec.Descriptor
}

// Write writes an OS image with the given product info and payloads (in that
// order) to dir, atomically: it is built in a temporary directory beside dir
// and renamed into place; on error nothing is left. An existing OCI layout at
// dir is replaced; any other existing non-empty dir is refused. Payloads are
// hashed in chunks of DefaultHashChunkSize. Same inputs give the same bytes.
//
// A hard-linked payload (same file system, no reflink) is the source file
// itself: rewriting the source in place afterwards changes the image, which
// verified reads detect and unverified ones do not. Build payloads into new
// files (write + rename), or use a reflink file system.
func Write(dir string, info ProductInfo, payloads []PayloadSource) error {
	_, err := WriteReport(dir, info, payloads)
	return err
}

// WriteReport is Write that also reports how each payload was stored.
func WriteReport(dir string, info ProductInfo, payloads []PayloadSource) ([]Placement, error) {
	ps, err := write(dir, info, payloads)
	if err != nil {
		return nil, fmt.Errorf("write os image %s: %w", dir, err)
	}
	return ps, nil
}

func write(dir string, info ProductInfo, payloads []PayloadSource) ([]Placement, error) {
	if err := checkSources(info, payloads); err != nil {
		return nil, err
	}
	w, err := oci.Create(dir)
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	cfg := Config{FormatVersion: FormatVersion, ProductInfo: info}
	var layers []ispec.Descriptor
	var placements []Placement
	for _, src := range payloads {
		ch := newChunkHasher(DefaultHashChunkSize)
		var d ispec.Descriptor
		var method oci.Method
		if src.Compression == CompressionZstd {
			d, err = writeZstd(w, src.Path, ch)
		} else {
			d, method, err = w.PlaceFile(src.Path, MediaTypePayload, ch)
		}
		if err != nil {
			return nil, fmt.Errorf("payload %q: %w", src.Name, err)
		}
		d.Annotations = map[string]string{titleAnnotation: src.Name}
		layers = append(layers, d)
		cfg.Payloads = append(cfg.Payloads, PayloadInfo{
			Name:              src.Name,
			Size:              ch.total,
			HashChunkSize:     DefaultHashChunkSize,
			ChunkHashesSHA256: ch.finish(),
		})
		placements = append(placements, Placement{Name: src.Name, Method: method, Size: ch.total, Layer: d})
	}
	cb, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cd, err := w.AddBlob(ConfigMediaType, cb)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	m := ispec.Manifest{MediaType: ispec.MediaTypeImageManifest, ArtifactType: ArtifactType, Config: cd, Layers: layers}
	m.SchemaVersion = 2
	if _, err := w.Commit(m); err != nil {
		return nil, err
	}
	return placements, nil
}

// checkSources checks everything that can be checked before writing.
func checkSources(info ProductInfo, payloads []PayloadSource) error {
	if err := checkProductInfo(info); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range payloads {
		if err := checkName(p.Name); err != nil {
			return err
		}
		if seen[p.Name] {
			return fmt.Errorf("payload %q given twice", p.Name)
		}
		seen[p.Name] = true
		if p.Compression != "" && p.Compression != CompressionZstd {
			return fmt.Errorf("payload %q: unknown compression %q (want \"\" or %q)", p.Name, p.Compression, CompressionZstd)
		}
		fi, err := os.Stat(p.Path)
		if err != nil {
			return fmt.Errorf("payload %q: %w", p.Name, err)
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("payload %q: %s is not a regular file (%s)", p.Name, p.Path, fi.Mode().Type())
		}
	}
	return nil
}

// writeZstd compresses the file at path into a new blob, feeding the
// uncompressed bytes to ch.
func writeZstd(w *oci.Writer, path string, ch *chunkHasher) (ispec.Descriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	defer f.Close()
	bw, err := w.NewBlob(MediaTypePayloadZstd)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	enc, err := zstd.NewWriter(bw, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return ispec.Descriptor{}, err
	}
	if _, err := io.Copy(io.MultiWriter(enc, ch), f); err != nil {
		enc.Close()
		return ispec.Descriptor{}, fmt.Errorf("compress %s: %w", path, err)
	}
	if err := enc.Close(); err != nil {
		return ispec.Descriptor{}, fmt.Errorf("compress %s: %w", path, err)
	}
	return bw.Commit()
}

// chunkHasher computes the SHA-256 of every chunk of what is written to it.
type chunkHasher struct {
	chunk int64
	h     hash.Hash
	in    int64 // bytes of the current chunk seen
	total int64
	sums  []string
}

func newChunkHasher(chunk int64) *chunkHasher {
	return &chunkHasher{chunk: chunk, h: sha256.New(), sums: []string{}}
}

func (c *chunkHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), c.chunk-c.in)
		c.h.Write(p[:take])
		c.in += take
		c.total += take
		p = p[take:]
		if c.in == c.chunk {
			c.sums = append(c.sums, hex.EncodeToString(c.h.Sum(nil)))
			c.h.Reset()
			c.in = 0
		}
	}
	return n, nil
}

// finish returns the chunk hashes, including a last partial chunk.
func (c *chunkHasher) finish() []string {
	if c.in > 0 {
		c.sums = append(c.sums, hex.EncodeToString(c.h.Sum(nil)))
		c.h.Reset()
		c.in = 0
	}
	return c.sums
}
