package oci

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/testerr"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const testArtifactType = "application/vnd.example.test.v1"

// testLayout is a layout written through Writer, with what went into it.
type testLayout struct {
	dir      string
	config   ispec.Descriptor
	layers   []ispec.Descriptor
	contents [][]byte // layer contents, in order
	manifest ispec.Descriptor
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeTestLayout writes a layout with a config blob, a placed file and a
// streamed blob.
func writeTestLayout(t testing.TB, parent string) *testLayout {
	t.Helper()
	tl := &testLayout{dir: filepath.Join(parent, "layout")}
	placed := randomBytes(t, 3<<20+17)
	src := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(src, placed, 0o644); err != nil {
		t.Fatal(err)
	}
	streamed := []byte("streamed blob content\n")
	w, err := Create(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if tl.config, err = w.AddBlob("application/vnd.example.config.v1+json", []byte(`{"hello":"world"}`)); err != nil {
		t.Fatal(err)
	}
	d1, _, err := w.PlaceFile(src, "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	bw, err := w.NewBlob("application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bw.Write(streamed); err != nil {
		t.Fatal(err)
	}
	d2, err := bw.Commit()
	if err != nil {
		t.Fatal(err)
	}
	tl.layers = []ispec.Descriptor{d1, d2}
	tl.contents = [][]byte{placed, streamed}
	tl.manifest, err = w.Commit(ispec.Manifest{ArtifactType: testArtifactType, Config: tl.config, Layers: tl.layers})
	if err != nil {
		t.Fatal(err)
	}
	return tl
}

func readAll(t *testing.T, rc io.ReadCloser) []byte {
	t.Helper()
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRoundTrip(t *testing.T) {
	parent := t.TempDir()
	tl := writeTestLayout(t, parent)
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.ManifestDescriptor(); got.Digest != tl.manifest.Digest || got.ArtifactType != testArtifactType {
		t.Errorf("manifest descriptor %+v, want digest %s and artifact type %s", got, tl.manifest.Digest, testArtifactType)
	}
	m := l.Manifest()
	if m.ArtifactType != testArtifactType || m.Config.Digest != tl.config.Digest || len(m.Layers) != 2 {
		t.Fatalf("manifest %+v does not match what was written", m)
	}
	cfg, err := l.ReadBlob(m.Config, 1<<10)
	if err != nil || string(cfg) != `{"hello":"world"}` {
		t.Errorf("config %q, %v", cfg, err)
	}
	for i, d := range m.Layers {
		rc, err := l.OpenBlob(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, rc); !bytes.Equal(got, tl.contents[i]) {
			t.Errorf("layer %d: verified read differs from what was written", i)
		}
		f, err := l.BlobFile(d)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, f); !bytes.Equal(got, tl.contents[i]) {
			t.Errorf("layer %d: unverified read differs from what was written", i)
		}
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "layout" {
		t.Errorf("parent holds %v, want only the layout (no temporary directories)", ents)
	}
	blobs, err := os.ReadDir(filepath.Join(tl.dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 4 { // config, two layers, manifest
		t.Errorf("blobs/sha256 holds %d files, want 4", len(blobs))
	}
	if _, err := os.Stat(filepath.Join(tl.dir, "blobs", ".tmp-1")); err == nil {
		t.Error("temporary blob left behind")
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	write := func(dir string) ispec.Descriptor {
		w, err := Create(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Abort()
		c, err := w.AddBlob("application/json", []byte(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		d, err := w.Commit(ispec.Manifest{Config: c})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := write(filepath.Join(t.TempDir(), "a")), write(filepath.Join(t.TempDir(), "b"))
	if a.Digest != b.Digest {
		t.Errorf("same input gave manifests %s and %s", a.Digest, b.Digest)
	}
}

func TestPlaceFileMethods(t *testing.T) {
	data := randomBytes(t, 1<<20+5)
	for _, tc := range []struct {
		methods []Method
		want    Method
	}{
		{[]Method{MethodHardlink, MethodCopy}, MethodHardlink},
		{[]Method{MethodCopy}, MethodCopy},
	} {
		t.Run(string(tc.want), func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			if err := os.WriteFile(src, data, 0o644); err != nil {
				t.Fatal(err)
			}
			w, err := Create(filepath.Join(dir, "layout"))
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			w.methods = tc.methods
			var also bytes.Buffer
			d, m, err := w.PlaceFile(src, "application/octet-stream", &also)
			if err != nil {
				t.Fatal(err)
			}
			if m != tc.want {
				t.Errorf("method %s, want %s", m, tc.want)
			}
			if d.Digest != digest.FromBytes(data) || d.Size != int64(len(data)) {
				t.Errorf("descriptor %+v does not describe the source", d)
			}
			if !bytes.Equal(also.Bytes(), data) {
				t.Errorf("the also writer got %d bytes, not the blob", also.Len())
			}
			p, _ := BlobPath(w.tmp, d.Digest)
			sfi, _ := os.Stat(src)
			bfi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if same := os.SameFile(sfi, bfi); same != (m == MethodHardlink) {
				t.Errorf("method %s but blob and source same file: %v", m, same)
			}
		})
	}
}

// TestPlaceFileDefault: with every method allowed, a file on the same file
// system is never copied.
func TestPlaceFileDefault(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.WriteFile(src, randomBytes(t, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := Create(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	_, m, err := w.PlaceFile(src, "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("placement on %s: %s", dir, m)
	if m == MethodCopy {
		t.Errorf("same file system, but the file was copied")
	}
}

func TestCommitReplacesLayout(t *testing.T) {
	parent := t.TempDir()
	old := writeTestLayout(t, parent)
	tl := writeTestLayout(t, parent)
	if old.manifest.Digest == tl.manifest.Digest {
		t.Fatal("two random layouts have one manifest digest")
	}
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.ManifestDescriptor().Digest != tl.manifest.Digest {
		t.Errorf("layout has manifest %s, want the new %s", l.ManifestDescriptor().Digest, tl.manifest.Digest)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("parent holds %d entries, want 1", len(ents))
	}
}

func TestCommitIntoEmptyDirectory(t *testing.T) {
	parent := t.TempDir()
	if err := os.Mkdir(filepath.Join(parent, "layout"), 0o755); err != nil {
		t.Fatal(err)
	}
	tl := writeTestLayout(t, parent)
	if _, err := Open(tl.dir); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("parent holds %d entries, want 1", len(ents))
	}
}

func TestCreateRefusesOtherDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Create(dir)
	testerr.Want(t, err, nil, "not empty", "refusing")
	if _, err := os.Stat(filepath.Join(dir, "precious")); err != nil {
		t.Errorf("existing file lost: %v", err)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	w, err := Create(filepath.Join(parent, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddBlob("application/json", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// A manifest naming a blob that was never written fails the commit.
	_, err = w.Commit(ispec.Manifest{Config: ispec.Descriptor{MediaType: "application/json", Digest: digest.FromString("nope"), Size: 4}})
	testerr.Want(t, err, nil, "not written")
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("failed commit left %v behind", ents)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("abort after failed commit: %v", err)
	}
}

// rewrite replaces a file of the layout.
func rewrite(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// indexWith returns index.json listing the given manifest descriptors.
func indexWith(t *testing.T, ds ...ispec.Descriptor) string {
	t.Helper()
	idx := ispec.Index{MediaType: ispec.MediaTypeImageIndex, Manifests: ds}
	idx.SchemaVersion = 2
	b, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenBroken: Open refuses a layout broken in each of these ways, with
// the sentinel a caller acts on and an error that names the fault.
func TestOpenBroken(t *testing.T) {
	withManifest := func(change func(d *ispec.Descriptor)) func(t *testing.T, tl *testLayout) {
		return func(t *testing.T, tl *testLayout) {
			d := tl.manifest
			change(&d)
			rewrite(t, tl.dir, "index.json", indexWith(t, d))
		}
	}
	const docker = "application/vnd.docker.distribution.manifest.v2+json"
	for _, tc := range []struct {
		name     string
		breakIt  func(t *testing.T, tl *testLayout)
		sentinel error
		want     []string
	}{
		{"MissingLayoutFile", func(t *testing.T, tl *testLayout) {
			os.Remove(filepath.Join(tl.dir, "oci-layout"))
		}, ErrLayout, []string{"oci-layout is missing"}},
		{"WrongLayoutVersion", func(t *testing.T, tl *testLayout) {
			rewrite(t, tl.dir, "oci-layout", `{"imageLayoutVersion":"2.0.0"}`)
		}, ErrLayout, []string{`imageLayoutVersion "2.0.0"`, "1.0.0"}},
		{"IndexWithNoManifest", func(t *testing.T, tl *testLayout) {
			rewrite(t, tl.dir, "index.json", indexWith(t))
		}, ErrLayout, []string{"lists 0 manifests"}},
		{"IndexWithTwoManifests", func(t *testing.T, tl *testLayout) {
			rewrite(t, tl.dir, "index.json", indexWith(t, tl.manifest, tl.manifest))
		}, ErrLayout, []string{"lists 2 manifests"}},
		{"UnknownManifestMediaType", withManifest(func(d *ispec.Descriptor) { d.MediaType = docker }),
			ErrLayout, []string{"manifest media type", docker}},
		{"ManifestSizeMismatch", withManifest(func(d *ispec.Descriptor) { d.Size++ }),
			ErrVerify, []string{"descriptor says"}},
		{"ManifestDigestMismatch", func(t *testing.T, tl *testLayout) {
			p, _ := BlobPath(tl.dir, tl.manifest.Digest)
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte(`"schemaVersion":2`), []byte(`"schemaVersion":3`), 1)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, ErrVerify, []string{"content digest is"}},
		{"TraversalDigest", withManifest(func(d *ispec.Descriptor) { d.Digest = "sha256:../../../../etc/passwd" }),
			ErrLayout, []string{"path traversal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tl := writeTestLayout(t, t.TempDir())
			tc.breakIt(t, tl)
			_, err := Open(tl.dir)
			testerr.Want(t, err, tc.sentinel, tc.want...)
		})
	}
}

func TestOpenMissingManifestBlob(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	p, _ := BlobPath(tl.dir, tl.manifest.Digest)
	os.Remove(p)
	_, err := Open(tl.dir)
	testerr.Want(t, err, ErrLayout, "manifest", string(tl.manifest.Digest), "blob file is missing")
}

func TestBlobBadDigests(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ digest, want string }{
		{"sha256:../index.json", "path traversal"},
		{"sha256:" + strings.Repeat("a", 63), "needs 64 hex digits, got 63"},
		{"md5:d41d8cd98f00b204e9800998ecf8427e", `unsupported algorithm "md5"`},
		{"sha256:" + strings.Repeat("A", 64), "not a lowercase hex digit"},
		{strings.Repeat("a", 64), "no <algorithm>: prefix"},
	} {
		_, err := l.OpenBlob(ispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.Digest(tc.digest), Size: 1})
		testerr.Want(t, err, ErrLayout, tc.want)
		_, err = l.BlobFile(ispec.Descriptor{MediaType: "application/octet-stream", Digest: digest.Digest(tc.digest), Size: 1})
		testerr.Want(t, err, ErrLayout, tc.want)
	}
}

func TestBlobSizeMismatch(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	d := tl.layers[0]
	d.Size--
	_, err = l.BlobFile(d)
	testerr.Want(t, err, ErrVerify, "descriptor says")
	_, err = l.OpenBlob(d)
	testerr.Want(t, err, ErrVerify, "descriptor says")
}

// TestOpenBlobDigestMismatch: a verified read hands out the bytes and
// reports the mismatch at the end instead of io.EOF.
func TestOpenBlobDigestMismatch(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	d := tl.layers[0]
	p, _ := l.BlobPath(d.Digest)
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{tl.contents[0][2<<20] ^ 1}, 2<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rc, err := l.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	testerr.Want(t, err, ErrVerify, string(d.Digest), "content digest is")
	if len(got) != len(tl.contents[0]) {
		t.Errorf("read %d bytes before the error, want all %d", len(got), len(tl.contents[0]))
	}
	// Unverified access does not look at the content.
	if f, err := l.BlobFile(d); err != nil {
		t.Errorf("unverified access to a corrupt blob of the right size: %v", err)
	} else {
		f.Close()
	}
}

func TestOpenBlobMissing(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := l.BlobPath(tl.layers[1].Digest)
	os.Remove(p)
	_, err = l.OpenBlob(tl.layers[1])
	testerr.Want(t, err, ErrLayout, string(tl.layers[1].Digest), "blob file is missing")
}

func TestReadBlobTooLarge(t *testing.T) {
	tl := writeTestLayout(t, t.TempDir())
	l, err := Open(tl.dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.ReadBlob(tl.layers[0], 1<<20)
	testerr.Want(t, err, ErrLayout, "more than the 1048576 allowed")
}
