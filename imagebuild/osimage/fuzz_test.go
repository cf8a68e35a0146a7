package osimage

import (
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/oci"
)

// FuzzParseConfig feeds config blobs to the parser, against the layers of a
// valid image; seeded with that image's config.
func FuzzParseConfig(f *testing.F) {
	dir, _ := writeImage(f, f.TempDir(), standardPayloads(f))
	l, err := oci.Open(dir)
	if err != nil {
		f.Fatal(err)
	}
	m := l.Manifest()
	cfg, err := l.ReadBlob(m.Config, MaxConfigSize)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cfg)
	f.Add([]byte(`{"format_version":1,"product_info":{"id":"a","version":"1","architecture":"x86_64"},"payloads":[]}`))
	f.Add([]byte(`{"format_version":1,"payloads":[{"name":"..","size":-1,"hash_chunk_size":0}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseConfig(b, m.Layers)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			return
		}
		if len(c.Payloads) != len(m.Layers) {
			t.Fatalf("accepted %d payloads for %d layers", len(c.Payloads), len(m.Layers))
		}
		for i, p := range c.Payloads {
			if p.HashChunkSize <= 0 || int64(len(p.ChunkHashesSHA256)) != chunkCount(p.Size, p.HashChunkSize) {
				t.Errorf("accepted payload %d %+v", i, p)
			}
			if m.Layers[i].MediaType == MediaTypePayload && m.Layers[i].Size != p.Size {
				t.Errorf("accepted payload %d of %d bytes for a layer of %d", i, p.Size, m.Layers[i].Size)
			}
		}
	})
}
