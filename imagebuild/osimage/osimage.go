// Package osimage reads and writes qcluster OS images: an OCI image layout
// (imagebuild/oci) whose one manifest carries
//
//   - artifactType ArtifactType ("application/vnd.qcluster.os.image.v1");
//   - a config blob of media type ConfigMediaType: JSON Config with
//     format_version (FormatVersion, 1), product_info and payloads[], each
//     payload with its uncompressed size and the SHA-256 of every
//     hash_chunk_size bytes (DefaultHashChunkSize, 1 MiB; the last chunk may
//     be shorter);
//   - one layer per payload, in config order, media type
//     MediaTypePayload ("application/octet-stream", the payload as is) or
//     MediaTypePayloadZstd ("application/zstd", one zstd stream), annotated
//     with org.opencontainers.image.title = the payload name.
//
// An OS image has the payloads PayloadKernel ("kernel.efi", the unified
// kernel image) and PayloadSystem ("system", the system file system with its
// dm-verity hash tree appended). Open does not insist on them, so that tools
// can handle images of other shapes; callers that boot an image call
// RequireOSPayloads (and RequireArchitecture).
//
// Trust: index.json → manifest (digest) → config (digest) → payload chunk
// hashes. Open verifies the manifest and config; Payload verifies every chunk
// of a payload as it streams (a zstd layer is additionally checked against its
// layer digest); PayloadUnverified hands out the raw blob file of an
// uncompressed layer (size checked, content not) so that it can be reflinked
// into a disk, leaving verification to the consumer (dm-verity in the guest).
//
// Limits: the config is at most MaxConfigSize bytes; hash_chunk_size is at
// most MaxHashChunkSize; a zstd window is at most MaxZstdWindow; payload names
// are 1–128 characters of [A-Za-z0-9._-] and not "." or "..". Compression is
// all or nothing per payload; there is no partial (seekable) access to a zstd
// payload.
package osimage

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	ispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/qcluster/qcluster/imagebuild/oci"
)

const (
	// ArtifactType is the manifest's artifactType.
	ArtifactType = "application/vnd.qcluster.os.image.v1"
	// ConfigMediaType is the media type of the config blob.
	ConfigMediaType = "application/vnd.qcluster.os.image.config.v1+json"
	// MediaTypePayload is the layer media type of an uncompressed payload.
	MediaTypePayload = "application/octet-stream"
	// MediaTypePayloadZstd is the layer media type of a zstd payload.
	MediaTypePayloadZstd = "application/zstd"
	// FormatVersion is the config format this package reads and writes.
	FormatVersion = 1
	// DefaultHashChunkSize is the chunk size Write hashes payloads with (1 MiB).
	DefaultHashChunkSize int64 = 1 << 20
	// MaxHashChunkSize is the largest hash_chunk_size accepted (64 MiB): a
	// verified reader holds one chunk in memory.
	MaxHashChunkSize int64 = 64 << 20
	// MaxConfigSize is the largest config blob accepted (64 MiB, enough for
	// chunk hashes of a few TiB).
	MaxConfigSize int64 = 64 << 20
	// MaxZstdWindow is the largest zstd window a reader accepts (128 MiB).
	MaxZstdWindow = 128 << 20

	// PayloadKernel is the unified kernel image of an OS image.
	PayloadKernel = "kernel.efi"
	// PayloadSystem is the system file system image with its dm-verity hash
	// tree appended.
	PayloadSystem = "system"

	// titleAnnotation names a layer's payload.
	titleAnnotation = ispec.AnnotationTitle
)

var (
	// ErrNotFound: the image has no payload of that name.
	ErrNotFound = errors.New("payload not found")
	// ErrCompressed: unverified access to a compressed payload.
	ErrCompressed = errors.New("payload is compressed")
	// ErrArchitecture: the image is for another architecture.
	ErrArchitecture = errors.New("wrong architecture")
	// ErrVerify: content does not match its digest or chunk hash.
	ErrVerify = oci.ErrVerify
	// ErrLayout: malformed layout, manifest or config.
	ErrLayout = oci.ErrLayout
)

// ProductInfo describes the operating system in the image.
type ProductInfo struct {
	// ID is a short machine name of the OS, e.g. "testos". Required.
	ID string `json:"id"`
	// Name is the human name, e.g. "qcluster test OS". Optional (may be "").
	Name string `json:"name"`
	// Version of the OS, e.g. "0.1.0". Required.
	Version string `json:"version"`
	// Architecture in uname -m spelling, e.g. "x86_64". Required.
	Architecture string `json:"architecture"`
	// BuildInfo is free text about the build (commit, builder). Optional.
	BuildInfo string `json:"build_info,omitempty"`
	// Components maps a part of the OS to its version, e.g. "kernel" →
	// "6.1.0-56-cloud-amd64 6.1.192-2". Optional.
	Components map[string]string `json:"components,omitempty"`
}

// PayloadInfo describes one payload in the config.
type PayloadInfo struct {
	// Name of the payload, e.g. "system".
	Name string `json:"name"`
	// Size of the uncompressed payload, in bytes.
	Size int64 `json:"size"`
	// HashChunkSize is the length of each hashed chunk, in bytes (the last
	// chunk may be shorter).
	HashChunkSize int64 `json:"hash_chunk_size"`
	// ChunkHashesSHA256 holds the lowercase hex SHA-256 of every chunk, in
	// order: ceil(Size/HashChunkSize) entries.
	ChunkHashesSHA256 []string `json:"chunk_hashes_sha256"`
}

// Config is the content of the config blob.
type Config struct {
	// FormatVersion of this config; FormatVersion (1) is the only one known.
	FormatVersion int `json:"format_version"`
	// ProductInfo describes the OS.
	ProductInfo ProductInfo `json:"product_info"`
	// Payloads, in the order of the manifest's layers.
	Payloads []PayloadInfo `json:"payloads"`
}

// clone returns a deep copy of c.
func (c Config) clone() Config {
	c.ProductInfo.Components = maps.Clone(c.ProductInfo.Components)
	c.Payloads = slices.Clone(c.Payloads)
	for i := range c.Payloads {
		c.Payloads[i].ChunkHashesSHA256 = slices.Clone(c.Payloads[i].ChunkHashesSHA256)
	}
	return c
}

// Image is an opened OS image. It holds no open files and is safe for
// concurrent use.
type Image struct {
	layout *oci.Layout
	config Config
	layers []ispec.Descriptor // layers[i] holds config.Payloads[i]
}

// Open opens the OS image in dir and checks the layout, the manifest
// (artifact type, config and layer media types) and the config (format
// version, product info, payload list against the layers). Payload bytes are
// not read.
func Open(dir string) (*Image, error) {
	l, err := oci.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("open os image: %w", err)
	}
	img, err := openLayout(l)
	if err != nil {
		return nil, fmt.Errorf("open os image %s: %w", dir, err)
	}
	return img, nil
}

func openLayout(l *oci.Layout) (*Image, error) {
	m := l.Manifest()
	if m.ArtifactType != ArtifactType {
		return nil, fmt.Errorf("%w: manifest artifactType %q, want %q", ErrLayout, m.ArtifactType, ArtifactType)
	}
	if m.Config.MediaType != ConfigMediaType {
		return nil, fmt.Errorf("%w: config media type %q, want %q", ErrLayout, m.Config.MediaType, ConfigMediaType)
	}
	b, err := l.ReadBlob(m.Config, MaxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := parseConfig(b, m.Layers)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	return &Image{layout: l, config: cfg, layers: m.Layers}, nil
}

// parseConfig parses and checks a config against the manifest's layers.
func parseConfig(b []byte, layers []ispec.Descriptor) (Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	if c.FormatVersion != FormatVersion {
		return Config{}, fmt.Errorf("%w: format_version %d not supported (want %d)", ErrLayout, c.FormatVersion, FormatVersion)
	}
	if err := checkProductInfo(c.ProductInfo); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrLayout, err)
	}
	if len(c.Payloads) != len(layers) {
		return Config{}, fmt.Errorf("%w: config lists %d payloads, manifest has %d layers", ErrLayout, len(c.Payloads), len(layers))
	}
	seen := map[string]bool{}
	for i, p := range c.Payloads {
		if err := checkPayloadInfo(p, layers[i]); err != nil {
			return Config{}, fmt.Errorf("%w: payload %d (%q): %w", ErrLayout, i, p.Name, err)
		}
		if seen[p.Name] {
			return Config{}, fmt.Errorf("%w: payload %q listed twice", ErrLayout, p.Name)
		}
		seen[p.Name] = true
	}
	return c, nil
}

func checkProductInfo(pi ProductInfo) error {
	for _, f := range []struct{ name, v string }{{"id", pi.ID}, {"version", pi.Version}, {"architecture", pi.Architecture}} {
		if f.v == "" {
			return fmt.Errorf("product_info.%s is empty", f.name)
		}
	}
	return nil
}

// checkName checks a payload name: 1–128 of [A-Za-z0-9._-], not "." or "..".
func checkName(name string) error {
	if name == "" || len(name) > 128 || name == "." || name == ".." {
		return fmt.Errorf("payload name %q: want 1-128 characters, not . or ..", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("payload name %q: character %q not in [A-Za-z0-9._-]", name, c)
		}
	}
	return nil
}

// chunkCount returns ceil(size/chunk) without overflow.
func chunkCount(size, chunk int64) int64 {
	n := size / chunk
	if size%chunk != 0 {
		n++
	}
	return n
}

func checkPayloadInfo(p PayloadInfo, layer ispec.Descriptor) error {
	if err := checkName(p.Name); err != nil {
		return err
	}
	if p.Size < 0 {
		return fmt.Errorf("negative size %d", p.Size)
	}
	if p.HashChunkSize <= 0 || p.HashChunkSize > MaxHashChunkSize {
		return fmt.Errorf("hash_chunk_size %d outside 1..%d", p.HashChunkSize, MaxHashChunkSize)
	}
	if n := chunkCount(p.Size, p.HashChunkSize); int64(len(p.ChunkHashesSHA256)) != n {
		return fmt.Errorf("%d chunk hashes, want %d for %d bytes in chunks of %d", len(p.ChunkHashesSHA256), n, p.Size, p.HashChunkSize)
	}
	for i, h := range p.ChunkHashesSHA256 {
		if !isSHA256Hex(h) {
			return fmt.Errorf("chunk hash %d %q is not 64 lowercase hex digits", i, h)
		}
	}
	switch layer.MediaType {
	case MediaTypePayload:
		if layer.Size != p.Size {
			return fmt.Errorf("layer %s has %d bytes, config says %d", layer.Digest, layer.Size, p.Size)
		}
	case MediaTypePayloadZstd:
	default:
		return fmt.Errorf("layer %s: unknown media type %q (want %q or %q)", layer.Digest, layer.MediaType, MediaTypePayload, MediaTypePayloadZstd)
	}
	if t, ok := layer.Annotations[titleAnnotation]; ok && t != p.Name {
		return fmt.Errorf("layer %s is titled %q", layer.Digest, t)
	}
	return nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Config returns a copy of the image's config.
func (i *Image) Config() Config { return i.config.clone() }

// Digest returns the digest of the image's manifest ("sha256:…"): the
// image's identity.
func (i *Image) Digest() string { return i.layout.ManifestDescriptor().Digest.String() }

// Dir returns the image's directory.
func (i *Image) Dir() string { return i.layout.Dir() }

// RequireArchitecture returns an error wrapping ErrArchitecture unless the
// image is for arch (uname -m spelling, e.g. "x86_64").
func (i *Image) RequireArchitecture(arch string) error {
	if got := i.config.ProductInfo.Architecture; got != arch {
		return fmt.Errorf("os image %s is for %q, want %q: %w", i.layout.Dir(), got, arch, ErrArchitecture)
	}
	return nil
}

// RequireOSPayloads returns an error wrapping ErrNotFound unless the image
// has the payloads PayloadKernel and PayloadSystem, i.e. it can be booted.
func (i *Image) RequireOSPayloads() error {
	for _, name := range []string{PayloadKernel, PayloadSystem} {
		if _, ok := i.find(name); !ok {
			return fmt.Errorf("os image %s has no %q payload (it has %q): %w", i.layout.Dir(), name, i.names(), ErrNotFound)
		}
	}
	return nil
}

func (i *Image) names() []string {
	var ns []string
	for _, p := range i.config.Payloads {
		ns = append(ns, p.Name)
	}
	return ns
}

func (i *Image) find(name string) (int, bool) {
	for n, p := range i.config.Payloads {
		if p.Name == name {
			return n, true
		}
	}
	return 0, false
}
