package osimage

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
	"github.com/qcluster/qcluster/imagebuild/oci"
)

var testInfo = ProductInfo{
	ID:           "testos",
	Name:         "qcluster test OS",
	Version:      "0.1.0",
	Architecture: "x86_64",
	BuildInfo:    "test",
	Components:   map[string]string{"kernel": "6.1.0-56-cloud-amd64 6.1.192-2", "loader": "systemd-boot 252.39-1~deb12u2"},
}

type testPayload struct {
	name, compression string
	data              []byte
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// compressible returns n bytes of text that zstd shrinks.
func compressible(n int) []byte {
	return bytes.Repeat([]byte("qcluster compressible payload line\n"), n/35+1)[:n]
}

// standardPayloads: the two OS payloads (sizes off and on a chunk boundary),
// an empty one and a zstd one spanning several chunks.
func standardPayloads(t testing.TB) []testPayload {
	return []testPayload{
		{name: PayloadKernel, data: randomBytes(t, 1<<20+3)},
		{name: PayloadSystem, data: randomBytes(t, 3<<20)},
		{name: "empty", data: nil},
		{name: "extra.zst", compression: CompressionZstd, data: compressible(2<<20 + 1000)},
	}
}

// writeImage writes payloads to files and an image of them to parent/image.
func writeImage(t testing.TB, parent string, ps []testPayload) (string, []Placement) {
	t.Helper()
	srcDir := t.TempDir()
	var srcs []PayloadSource
	for _, p := range ps {
		path := filepath.Join(srcDir, p.name)
		if err := os.WriteFile(path, p.data, 0o644); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, PayloadSource{Name: p.name, Path: path, Compression: p.compression})
	}
	dir := filepath.Join(parent, "image")
	placements, err := WriteReport(dir, testInfo, srcs)
	if err != nil {
		t.Fatal(err)
	}
	return dir, placements
}

func readPayload(t *testing.T, p *Payload) ([]byte, error) {
	t.Helper()
	rc, err := p.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// openImage opens the image in dir.
func openImage(t testing.TB, dir string) *Image {
	t.Helper()
	img, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// openPayload opens the image in dir and returns its payload name.
func openPayload(t testing.TB, dir, name string) *Payload {
	t.Helper()
	v, err := openImage(t, dir).Payload(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRoundTrip(t *testing.T) {
	ps := standardPayloads(t)
	dir, placements := writeImage(t, t.TempDir(), ps)
	img := openImage(t, dir)
	cfg := img.Config()
	if cfg.FormatVersion != FormatVersion || cfg.ProductInfo.ID != "testos" || cfg.ProductInfo.Components["loader"] != testInfo.Components["loader"] {
		t.Errorf("config %+v does not match what was written", cfg)
	}
	if err := img.RequireArchitecture("x86_64"); err != nil {
		t.Error(err)
	}
	if err := img.RequireOSPayloads(); err != nil {
		t.Error(err)
	}
	for i, p := range ps {
		if cfg.Payloads[i].Name != p.name || cfg.Payloads[i].Size != int64(len(p.data)) {
			t.Errorf("config payload %d is %+v, want %s of %d bytes", i, cfg.Payloads[i], p.name, len(p.data))
		}
		if placements[i].Name != p.name || (p.compression == "") != (placements[i].Method != "") {
			t.Errorf("placement %d %+v for payload %s (compression %q)", i, placements[i], p.name, p.compression)
		}
		t.Logf("payload %s: %d bytes, stored as %s in %d bytes, method %q", p.name, len(p.data), placements[i].Layer.MediaType, placements[i].Layer.Size, placements[i].Method)
		v, err := img.Payload(p.name)
		if err != nil {
			t.Fatal(err)
		}
		if v.Size() != int64(len(p.data)) || v.Name() != p.name {
			t.Errorf("payload %s: Size %d Name %q", p.name, v.Size(), v.Name())
		}
		got, err := readPayload(t, v)
		if err != nil {
			t.Fatalf("payload %s: verified read: %v", p.name, err)
		}
		if !bytes.Equal(got, p.data) {
			t.Errorf("payload %s: verified read gave %d bytes, different from the %d written", p.name, len(got), len(p.data))
		}
		// io.Copy takes the WriteTo path.
		rc, _ := v.Open()
		var buf bytes.Buffer
		if _, err := io.Copy(&buf, rc); err != nil || !bytes.Equal(buf.Bytes(), p.data) {
			t.Errorf("payload %s: verified copy: %v, equal %v", p.name, err, bytes.Equal(buf.Bytes(), p.data))
		}
		rc.Close()
		if p.compression != "" {
			continue
		}
		u, err := img.PayloadUnverified(p.name)
		if err != nil {
			t.Fatal(err)
		}
		rc, err = u.Open()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rc.(*os.File); !ok {
			t.Errorf("payload %s: unverified Open returned %T, want *os.File", p.name, rc)
		}
		rc.Close()
		if got, err := readPayload(t, u); err != nil || !bytes.Equal(got, p.data) {
			t.Errorf("payload %s: unverified read: %v, equal %v", p.name, err, bytes.Equal(got, p.data))
		}
	}
	// Config returns a copy.
	cfg.Payloads[0].Name = "changed"
	if img.Config().Payloads[0].Name != PayloadKernel {
		t.Error("changing the returned config changed the image")
	}
}

func TestWriteIsDeterministic(t *testing.T) {
	ps := standardPayloads(t)
	a, _ := writeImage(t, t.TempDir(), ps)
	b, _ := writeImage(t, t.TempDir(), ps)
	ia, _ := os.ReadFile(filepath.Join(a, "index.json"))
	ib, _ := os.ReadFile(filepath.Join(b, "index.json"))
	if !bytes.Equal(ia, ib) {
		t.Errorf("same inputs, different images:\n%s\n%s", ia, ib)
	}
}

// TestWriteReplacesImage: writing over an existing image replaces it.
func TestWriteReplacesImage(t *testing.T) {
	parent := t.TempDir()
	writeImage(t, parent, standardPayloads(t))
	dir, _ := writeImage(t, parent, []testPayload{{name: "only", data: []byte("x")}})
	img := openImage(t, dir)
	if n := len(img.Config().Payloads); n != 1 {
		t.Errorf("image has %d payloads, want the new image's 1", n)
	}
}

func TestWriteBadInputLeavesNothing(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	noID := testInfo
	noID.ID = ""
	for _, tc := range []struct {
		name string
		info ProductInfo
		ps   []PayloadSource
		want string
	}{
		{"missing file", testInfo, []PayloadSource{{Name: "a", Path: src}, {Name: "b", Path: src + ".missing"}}, "no such file"},
		{"duplicate name", testInfo, []PayloadSource{{Name: "a", Path: src}, {Name: "a", Path: src}}, `payload "a" given twice`},
		{"bad compression", testInfo, []PayloadSource{{Name: "a", Path: src, Compression: "gzip"}}, `unknown compression "gzip"`},
		{"bad name", testInfo, []PayloadSource{{Name: "../a", Path: src}}, `character '/'`},
		{"no product id", noID, nil, "product_info.id is empty"},
		{"directory payload", testInfo, []PayloadSource{{Name: "a", Path: filepath.Dir(src)}}, "not a regular file"},
		// A regular file that fails to read: the error comes mid-write, after
		// payload "a" was placed in the temporary directory.
		{"read error", testInfo, []PayloadSource{{Name: "a", Path: src}, {Name: "b", Path: "/proc/self/mem"}}, `payload "b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			err := Write(filepath.Join(parent, "image"), tc.info, tc.ps)
			testerr.Want(t, err, nil, tc.want)
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("failed write left %v", ents)
			}
		})
	}
}

// --- bad images ---

// blobPut writes b as a blob of the layout in dir.
func blobPut(t *testing.T, dir, mediaType string, b []byte) ispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	p, err := oci.BlobPath(dir, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b))}
}

// editImage rewrites the image's manifest (and with it index.json) through
// editManifest, after replacing the config blob by editConfig's output. Either
// may be nil.
func editImage(t *testing.T, dir string, editConfig func([]byte) []byte, editManifest func(*ispec.Manifest)) {
	t.Helper()
	l, err := oci.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := l.Manifest()
	if editConfig != nil {
		b, err := l.ReadBlob(m.Config, MaxConfigSize)
		if err != nil {
			t.Fatal(err)
		}
		m.Config = blobPut(t, dir, m.Config.MediaType, editConfig(b))
	}
	if editManifest != nil {
		editManifest(&m)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	md := blobPut(t, dir, ispec.MediaTypeImageManifest, mb)
	idx := ispec.Index{MediaType: ispec.MediaTypeImageIndex, Manifests: []ispec.Descriptor{md}}
	idx.SchemaVersion = 2
	ib, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(dir, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
}

// editConfig rewrites the config through a typed edit.
func editConfig(t *testing.T, dir string, edit func(*Config)) {
	t.Helper()
	editImage(t, dir, func(b []byte) []byte {
		var c Config
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		edit(&c)
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}, nil)
}

func TestOpenWrongArtifactType(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editImage(t, dir, nil, func(m *ispec.Manifest) { m.ArtifactType = "application/vnd.other" })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, `artifactType "application/vnd.other"`)
}

func TestOpenUnknownConfigMediaType(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editImage(t, dir, nil, func(m *ispec.Manifest) { m.Config.MediaType = ispec.MediaTypeImageConfig })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, "config media type", ispec.MediaTypeImageConfig)
}

func TestOpenUnknownLayerMediaType(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editImage(t, dir, nil, func(m *ispec.Manifest) { m.Layers[1].MediaType = ispec.MediaTypeImageLayerGzip })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, `payload 1 ("system")`, "unknown media type", ispec.MediaTypeImageLayerGzip)
}

func TestOpenInvalidConfigJSON(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editImage(t, dir, func(b []byte) []byte { return b[:len(b)-1] }, nil)
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, "config", "unexpected end of JSON input")
}

func TestOpenConfigDigestMismatch(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	l, err := oci.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := l.BlobPath(l.Manifest().Config.Digest)
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, bytes.Replace(b, []byte("testos"), []byte("evilos"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	testerr.Want(t, err, ErrVerify, "config", "content digest is")
}

func TestOpenUnsupportedFormatVersion(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editConfig(t, dir, func(c *Config) { c.FormatVersion = 2 })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, "format_version 2 not supported")
}

func TestOpenPayloadCountMismatch(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editConfig(t, dir, func(c *Config) { c.Payloads = c.Payloads[:3] })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, "config lists 3 payloads, manifest has 4 layers")
}

func TestOpenPayloadSizeMismatch(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editConfig(t, dir, func(c *Config) { c.Payloads[1].Size-- })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, `"system"`, "3145728 bytes, config says 3145727")
}

func TestOpenChunkCountMismatch(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editConfig(t, dir, func(c *Config) { c.Payloads[1].ChunkHashesSHA256 = c.Payloads[1].ChunkHashesSHA256[1:] })
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, `"system"`, "2 chunk hashes, want 3")
}

func TestOpenMissingLayoutFile(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	os.Remove(filepath.Join(dir, "oci-layout"))
	_, err := Open(dir)
	testerr.Want(t, err, ErrLayout, "oci-layout is missing")
}

// TestPayloadChunkMismatch: a corrupt chunk in the middle of an uncompressed
// payload; the verified reader hands out the chunks before it, then fails
// naming the payload and the chunk.
func TestPayloadChunkMismatch(t *testing.T) {
	ps := standardPayloads(t)
	dir, placements := writeImage(t, t.TempDir(), ps)
	p, err := oci.BlobPath(dir, placements[1].Layer.Digest)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(2<<20 + 12345)
	if _, err := f.WriteAt([]byte{ps[1].data[off] ^ 0xff}, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := openImage(t, dir)
	v, err := img.Payload(PayloadSystem)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readPayload(t, v)
	testerr.Want(t, err, ErrVerify, `payload "system"`, "chunk 2 (bytes 2097152-3145727)")
	if !bytes.Equal(got, ps[1].data[:2<<20]) {
		t.Errorf("read %d bytes before the error, want the 2 good chunks (%d bytes)", len(got), 2<<20)
	}
	// The unverified path hands out the file as it is.
	u, err := img.PayloadUnverified(PayloadSystem)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := readPayload(t, u); err != nil || len(got) != len(ps[1].data) {
		t.Errorf("unverified read of a corrupt payload: %d bytes, %v", len(got), err)
	}
}

// TestPayloadZstdChunkMismatch: for a zstd payload the chunk hashes cover the
// decompressed bytes.
func TestPayloadZstdChunkMismatch(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	editConfig(t, dir, func(c *Config) { c.Payloads[3].ChunkHashesSHA256[1] = strings.Repeat("0", 64) })
	v := openPayload(t, dir, "extra.zst")
	got, err := readPayload(t, v)
	testerr.Want(t, err, ErrVerify, `payload "extra.zst"`, "chunk 1 ", "config says 0000")
	if len(got) != 1<<20 {
		t.Errorf("read %d bytes before the error, want chunk 0 (%d bytes)", len(got), 1<<20)
	}
}

func TestPayloadTruncatedBlob(t *testing.T) {
	dir, placements := writeImage(t, t.TempDir(), standardPayloads(t))
	p, _ := oci.BlobPath(dir, placements[0].Layer.Digest)
	if err := os.Truncate(p, 1000); err != nil {
		t.Fatal(err)
	}
	_, err := openPayload(t, dir, PayloadKernel).Open()
	testerr.Want(t, err, ErrVerify, `payload "kernel.efi"`, "blob file has 1000 bytes, descriptor says 1048579")
}

func TestPayloadUnverifiedCompressed(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	_, err := openImage(t, dir).PayloadUnverified("extra.zst")
	testerr.Want(t, err, ErrCompressed, `payload "extra.zst"`, "application/zstd")
}

func TestPayloadNotFound(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	img := openImage(t, dir)
	_, err := img.Payload("initrd")
	testerr.Want(t, err, ErrNotFound, `payload "initrd"`)
	_, err = img.PayloadUnverified("initrd")
	testerr.Want(t, err, ErrNotFound, `payload "initrd"`)
}

func TestRequireOSPayloads(t *testing.T) {
	for _, missing := range []string{PayloadKernel, PayloadSystem} {
		t.Run(missing, func(t *testing.T) {
			var ps []testPayload
			for _, p := range standardPayloads(t) {
				if p.name != missing {
					ps = append(ps, p)
				}
			}
			dir, _ := writeImage(t, t.TempDir(), ps)
			img := openImage(t, dir)
			testerr.Want(t, img.RequireOSPayloads(), ErrNotFound, `no "`+missing+`" payload`)
		})
	}
}

func TestRequireArchitecture(t *testing.T) {
	dir, _ := writeImage(t, t.TempDir(), standardPayloads(t))
	img := openImage(t, dir)
	testerr.Want(t, img.RequireArchitecture("aarch64"), ErrArchitecture, `is for "x86_64", want "aarch64"`)
}
