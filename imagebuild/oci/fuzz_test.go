package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// seedLayout writes a valid layout and returns its index.json and manifest.
func seedLayout(f *testing.F) (index, manifest []byte) {
	tl := writeTestLayout(f, f.TempDir())
	index, err := os.ReadFile(filepath.Join(tl.dir, "index.json"))
	if err != nil {
		f.Fatal(err)
	}
	p, _ := BlobPath(tl.dir, tl.manifest.Digest)
	if manifest, err = os.ReadFile(p); err != nil {
		f.Fatal(err)
	}
	return index, manifest
}

// checkFuzzErr fails on errors that break the house rules.
func checkFuzzErr(t *testing.T, err error) {
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
}

func FuzzParseIndex(f *testing.F) {
	index, _ := seedLayout(f)
	f.Add(index)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../x","size":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseIndex(b)
		checkFuzzErr(t, err)
		if err != nil {
			return
		}
		if CheckDigest(d.Digest) != nil || d.Size < 0 || d.Size > MaxMetadataSize {
			t.Errorf("accepted descriptor %+v", d)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	_, manifest := seedLayout(f)
	f.Add(manifest)
	f.Add([]byte(`{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha512:00","size":-1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		checkFuzzErr(t, err)
		if err != nil {
			return
		}
		for _, d := range append(m.Layers, m.Config) {
			if CheckDigest(d.Digest) != nil || d.Size < 0 || d.MediaType == "" {
				t.Errorf("accepted descriptor %+v", d)
			}
		}
	})
}

func FuzzParseLayoutFile(f *testing.F) {
	f.Add([]byte(`{"imageLayoutVersion":"1.0.0"}`))
	f.Add([]byte(`{"imageLayoutVersion":"1.0.1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkFuzzErr(t, parseLayoutFile(b))
	})
}

// FuzzBlobPath: an accepted digest always names a file directly inside
// blobs/<alg>/.
func FuzzBlobPath(f *testing.F) {
	f.Add(string(digest.FromString("x")))
	f.Add("sha256:../../etc/passwd")
	f.Add("sha512:" + strings.Repeat("0", 128))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := BlobPath("/layout", digest.Digest(s))
		checkFuzzErr(t, err)
		if err != nil {
			return
		}
		dir := filepath.Dir(p)
		if filepath.Dir(dir) != "/layout/blobs" || (filepath.Base(dir) != "sha256" && filepath.Base(dir) != "sha512") {
			t.Errorf("digest %q gives path %s outside blobs/<alg>/", s, p)
		}
	})
}
