// Package oci reads and writes OCI image layouts that hold exactly one image
// manifest, as used for qcluster's OS images (see imagebuild/osimage).
//
// Scope, following the OCI image-spec v1.1 ("image-layout.md", "manifest.md",
// "descriptor.md"):
//
//   - the `oci-layout` file must say imageLayoutVersion "1.0.0";
//   - `index.json` must be an image index (schemaVersion 2) with exactly one
//     manifest descriptor of media type application/vnd.oci.image.manifest.v1+json;
//   - the manifest (schemaVersion 2) is read through its digest and size, and
//     every descriptor in it (config, layers, subject) must be well formed;
//   - blobs live at `blobs/<alg>/<hex>`; only sha256 (64 hex digits) and sha512
//     (128) are accepted, lowercase, so a descriptor can never name a path
//     outside the blobs directory.
//
// Blobs are read either verified (OpenBlob, ReadBlob: the digest and size are
// checked while streaming, and a mismatch is reported at EOF instead of io.EOF)
// or unverified (BlobFile: the file itself, after a path and size check, for
// callers that reflink or map it and verify by other means).
//
// Limits: no nested indexes, no multi-platform images, no garbage collection,
// no registry access. Index and manifest files are capped at MaxMetadataSize.
// The layer media types are the caller's business (osimage checks them); this
// package checks only the manifest's own media type. Blob files are found
// through the file system as is: a symlinked blob is followed, but the target
// must be a regular file.
//
// The Writer (writer.go) builds a layout in a temporary directory beside the
// destination and renames it into place on Commit, so a reader never sees half
// an image; uncompressed payload files are placed by reflink, else hard link,
// else copy.
package oci

import (
	_ "crypto/sha256" // registers the hash for go-digest
	_ "crypto/sha512" // registers the hash for go-digest
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxMetadataSize is the largest oci-layout, index.json or manifest this
// package reads, in bytes (4 MiB): they are tiny, and the cap bounds memory on
// hostile input.
const MaxMetadataSize = 4 << 20

var (
	// ErrLayout marks a malformed layout: a missing or wrong file, JSON that
	// does not parse or breaks the spec, a bad digest or descriptor.
	ErrLayout = errors.New("invalid oci layout")
	// ErrVerify marks blob content that does not match its descriptor
	// (digest or size).
	ErrVerify = errors.New("verification failed")
)

// Layout is an opened OCI image layout with its one manifest. It holds no open
// files; it is safe for concurrent use.
type Layout struct {
	dir          string
	manifestDesc ispec.Descriptor
	manifest     ispec.Manifest
}

// Open reads and checks the layout in dir: oci-layout, index.json, and the
// manifest blob (digest and size verified). It does not read other blobs.
func Open(dir string) (*Layout, error) {
	l := &Layout{dir: dir}
	if err := l.load(); err != nil {
		return nil, fmt.Errorf("open oci layout %s: %w", dir, err)
	}
	return l, nil
}

func (l *Layout) load() error {
	b, err := readMetadata(filepath.Join(l.dir, ispec.ImageLayoutFile))
	if err != nil {
		return err
	}
	if err := parseLayoutFile(b); err != nil {
		return err
	}
	b, err = readMetadata(filepath.Join(l.dir, ispec.ImageIndexFile))
	if err != nil {
		return err
	}
	desc, err := parseIndex(b)
	if err != nil {
		return err
	}
	b, err = l.ReadBlob(desc, MaxMetadataSize)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	l.manifestDesc, l.manifest = desc, m
	return nil
}

// Dir returns the layout's directory as given to Open.
func (l *Layout) Dir() string { return l.dir }

// ManifestDescriptor returns the descriptor of the manifest from index.json.
func (l *Layout) ManifestDescriptor() ispec.Descriptor { return l.manifestDesc }

// Manifest returns the parsed manifest. Its slices and maps are shared: do not
// modify them.
func (l *Layout) Manifest() ispec.Manifest { return l.manifest }

// readMetadata reads a small file of the layout itself (not a blob).
func readMetadata(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s is missing", ErrLayout, filepath.Base(path))
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file (%s)", ErrLayout, filepath.Base(path), fi.Mode().Type())
	}
	if fi.Size() > MaxMetadataSize {
		return nil, fmt.Errorf("%w: %s is %d bytes, more than the %d allowed", ErrLayout, filepath.Base(path), fi.Size(), MaxMetadataSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxMetadataSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Base(path), err)
	}
	if len(b) > MaxMetadataSize {
		return nil, fmt.Errorf("%w: %s grew past %d bytes while read", ErrLayout, filepath.Base(path), MaxMetadataSize)
	}
	return b, nil
}

// parseLayoutFile checks the content of the oci-layout file.
func parseLayoutFile(b []byte) error {
	var lf ispec.ImageLayout
	if err := json.Unmarshal(b, &lf); err != nil {
		return fmt.Errorf("%w: oci-layout: %w", ErrLayout, err)
	}
	if lf.Version != ispec.ImageLayoutVersion {
		return fmt.Errorf("%w: oci-layout: imageLayoutVersion %q, want %q", ErrLayout, lf.Version, ispec.ImageLayoutVersion)
	}
	return nil
}

// parseIndex checks index.json and returns its only manifest descriptor.
func parseIndex(b []byte) (ispec.Descriptor, error) {
	var idx ispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json: %w", ErrLayout, err)
	}
	if idx.SchemaVersion != 2 {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json: schemaVersion %d, want 2", ErrLayout, idx.SchemaVersion)
	}
	if idx.MediaType != "" && idx.MediaType != ispec.MediaTypeImageIndex {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json: mediaType %q, want %q", ErrLayout, idx.MediaType, ispec.MediaTypeImageIndex)
	}
	if len(idx.Manifests) != 1 {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json lists %d manifests, want exactly 1", ErrLayout, len(idx.Manifests))
	}
	d := idx.Manifests[0]
	if err := checkDescriptor(d); err != nil {
		return ispec.Descriptor{}, fmt.Errorf("index.json: manifest descriptor: %w", err)
	}
	if d.MediaType != ispec.MediaTypeImageManifest {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json: manifest media type %q, want %q", ErrLayout, d.MediaType, ispec.MediaTypeImageManifest)
	}
	if d.Size > MaxMetadataSize {
		return ispec.Descriptor{}, fmt.Errorf("%w: index.json: manifest is %d bytes, more than the %d allowed", ErrLayout, d.Size, MaxMetadataSize)
	}
	return d, nil
}

// parseManifest checks an image manifest and every descriptor in it.
func parseManifest(b []byte) (ispec.Manifest, error) {
	var m ispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return ispec.Manifest{}, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	if m.SchemaVersion != 2 {
		return ispec.Manifest{}, fmt.Errorf("%w: schemaVersion %d, want 2", ErrLayout, m.SchemaVersion)
	}
	if m.MediaType != "" && m.MediaType != ispec.MediaTypeImageManifest {
		return ispec.Manifest{}, fmt.Errorf("%w: mediaType %q, want %q", ErrLayout, m.MediaType, ispec.MediaTypeImageManifest)
	}
	if err := checkDescriptor(m.Config); err != nil {
		return ispec.Manifest{}, fmt.Errorf("config descriptor: %w", err)
	}
	for i, d := range m.Layers {
		if err := checkDescriptor(d); err != nil {
			return ispec.Manifest{}, fmt.Errorf("layer %d descriptor: %w", i, err)
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject); err != nil {
			return ispec.Manifest{}, fmt.Errorf("subject descriptor: %w", err)
		}
	}
	return m, nil
}

// checkDescriptor checks the parts of a descriptor this package relies on:
// a media type, a usable digest, a size that is not negative.
func checkDescriptor(d ispec.Descriptor) error {
	if d.MediaType == "" {
		return fmt.Errorf("%w: descriptor %q has no mediaType", ErrLayout, d.Digest)
	}
	if err := CheckDigest(d.Digest); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("%w: descriptor %s has negative size %d", ErrLayout, d.Digest, d.Size)
	}
	return nil
}

// digestHexLen lists the accepted digest algorithms and their hex lengths.
var digestHexLen = map[string]int{"sha256": 64, "sha512": 128}

// CheckDigest reports whether d is a digest this package can address: sha256
// or sha512 with the exact number of lowercase hex digits. Anything else,
// including a digest that would name a path outside blobs/<alg>/, is an error
// wrapping ErrLayout.
func CheckDigest(d digest.Digest) error {
	s := string(d)
	alg, enc, ok := cutColon(s)
	if !ok {
		return fmt.Errorf("%w: digest %q has no <algorithm>: prefix", ErrLayout, s)
	}
	for _, c := range s {
		if c == '/' || c == '\\' || c == 0 {
			return fmt.Errorf("%w: digest %q contains a path separator (path traversal)", ErrLayout, s)
		}
	}
	n, ok := digestHexLen[alg]
	if !ok {
		return fmt.Errorf("%w: digest %q: unsupported algorithm %q (want sha256 or sha512)", ErrLayout, s, alg)
	}
	if len(enc) != n {
		return fmt.Errorf("%w: digest %q: %s needs %d hex digits, got %d", ErrLayout, s, alg, n, len(enc))
	}
	for i := 0; i < len(enc); i++ {
		if c := enc[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: digest %q: %q at %d is not a lowercase hex digit", ErrLayout, s, c, i)
		}
	}
	if err := d.Validate(); err != nil { // the library agrees, or we say why not
		return fmt.Errorf("%w: digest %q: %w", ErrLayout, s, err)
	}
	return nil
}

func cutColon(s string) (before, after string, ok bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], i > 0
		}
	}
	return s, "", false
}

// BlobPath returns dir/blobs/<alg>/<hex> for d after CheckDigest.
func BlobPath(dir string, d digest.Digest) (string, error) {
	if err := CheckDigest(d); err != nil {
		return "", err
	}
	return filepath.Join(dir, ispec.ImageBlobsDir, string(d.Algorithm()), d.Encoded()), nil
}

// BlobPath returns the path of the blob with digest d in this layout.
func (l *Layout) BlobPath(d digest.Digest) (string, error) { return BlobPath(l.dir, d) }
