package oci

import (
	"cmp"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/go-digest"
	ispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Method says how PlaceFile put a file's bytes into the layout.
type Method string

const (
	// MethodReflink: FICLONE; the blob shares the source's extents (XFS with
	// reflink=1, btrfs). No data is copied and later changes to the source do
	// not affect the blob.
	MethodReflink Method = "reflink"
	// MethodHardlink: the blob is a hard link to the source (same file system,
	// no reflink). No data is copied, but the blob IS the source file: changing
	// the source in place changes the image (verified reads will notice).
	MethodHardlink Method = "hardlink"
	// MethodCopy: the bytes were read and written.
	MethodCopy Method = "copy"
)

// placeMethods is the order PlaceFile tries; tests narrow it.
var placeMethods = []Method{MethodReflink, MethodHardlink, MethodCopy}

// Writer builds a layout with one manifest in a temporary directory beside
// its destination and renames it into place on Commit. Blobs are sha256. A
// Writer is not safe for concurrent use. Always call Abort (deferred) or
// Commit: Abort after a successful Commit does nothing.
type Writer struct {
	dir     string                  // destination
	tmp     string                  // the layout being built
	blobs   map[digest.Digest]int64 // blobs written so far, with their sizes
	n       int                     // counter for temporary names
	done    bool
	methods []Method
}

// Create starts a layout that Commit will place at dir. dir must not exist,
// or be an empty directory, or hold an OCI layout (it has an oci-layout file),
// which Commit then replaces; anything else is refused, so a mistyped path
// never destroys unrelated data. The temporary directory is
// <parent>/.<name>.tmp-<random>, so the final rename stays on one file system.
func Create(dir string) (*Writer, error) {
	dir = filepath.Clean(dir)
	if err := checkReplaceable(dir); err != nil {
		return nil, fmt.Errorf("create oci layout %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("create oci layout %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, ispec.ImageBlobsDir, string(digest.SHA256)), 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("create oci layout %s: %w", dir, err)
	}
	return &Writer{dir: dir, tmp: tmp, blobs: map[digest.Digest]int64{}, methods: placeMethods}, nil
}

// checkReplaceable refuses a destination that is something other than
// nothing, an empty directory or an OCI layout.
func checkReplaceable(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s exists and is not a directory (%s); refusing to replace it", dir, fi.Mode().Type())
	}
	if _, err := os.Lstat(filepath.Join(dir, ispec.ImageLayoutFile)); err == nil {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s exists, is not empty and has no %s file; refusing to replace it", dir, ispec.ImageLayoutFile)
	}
	return nil
}

// Abort removes everything written so far. It is a no-op after Commit.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	return os.RemoveAll(w.tmp)
}

func (w *Writer) tempName() string {
	w.n++
	return filepath.Join(w.tmp, ispec.ImageBlobsDir, ".tmp-"+strconv.Itoa(w.n))
}

// install renames the temporary file tmp to the blob path of d, or drops it
// when the blob is already there.
func (w *Writer) install(tmp string, d digest.Digest, size int64) error {
	if _, ok := w.blobs[d]; ok {
		return os.Remove(tmp)
	}
	p, err := BlobPath(w.tmp, d)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, p); err != nil {
		return err
	}
	w.blobs[d] = size
	return nil
}

// BlobWriter streams one blob into the layout. Write, then Commit.
type BlobWriter struct {
	w         *Writer
	f         *os.File
	h         hash.Hash
	n         int64
	mediaType string
	err       error
}

// NewBlob starts a blob of the given media type, written through the returned
// BlobWriter. Its temporary file is removed by Abort if never committed.
func (w *Writer) NewBlob(mediaType string) (*BlobWriter, error) {
	if w.done {
		return nil, fmt.Errorf("new blob: writer for %s already finished", w.dir)
	}
	f, err := os.OpenFile(w.tempName(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("new blob: %w", err)
	}
	return &BlobWriter{w: w, f: f, h: sha256.New(), mediaType: mediaType}, nil
}

// Write appends p to the blob.
func (b *BlobWriter) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.f.Write(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	if err != nil {
		b.err = fmt.Errorf("write blob: %w", err)
	}
	return n, b.err
}

// Commit syncs the blob, moves it to its content address and returns its
// descriptor. The BlobWriter cannot be used afterwards.
func (b *BlobWriter) Commit() (ispec.Descriptor, error) {
	if b.err != nil {
		b.f.Close()
		return ispec.Descriptor{}, b.err
	}
	b.err = errors.New("write blob: already committed")
	err := b.f.Sync()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ispec.Descriptor{}, fmt.Errorf("write blob: %w", err)
	}
	d := digest.NewDigest(digest.SHA256, b.h)
	if err := b.w.install(b.f.Name(), d, b.n); err != nil {
		return ispec.Descriptor{}, fmt.Errorf("write blob %s: %w", d, err)
	}
	return ispec.Descriptor{MediaType: b.mediaType, Digest: d, Size: b.n}, nil
}

// AddBlob writes data as a blob and returns its descriptor.
func (w *Writer) AddBlob(mediaType string, data []byte) (ispec.Descriptor, error) {
	b, err := w.NewBlob(mediaType)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	if _, err := b.Write(data); err != nil {
		b.f.Close()
		return ispec.Descriptor{}, err
	}
	return b.Commit()
}

// PlaceFile puts the file at path into the layout as a blob without copying
// its bytes where it can: FICLONE reflink, else a hard link, else a copy; the
// Method says which. The placed blob is then read once to compute its digest;
// if also is not nil, every byte of the blob is written to it in order during
// that pass (for extra hashes). Failures of reflink or hard link are not
// errors: they just select the next method.
func (w *Writer) PlaceFile(path, mediaType string, also io.Writer) (ispec.Descriptor, Method, error) {
	d, m, err := w.placeFile(path, mediaType, also)
	if err != nil {
		return ispec.Descriptor{}, "", fmt.Errorf("place %s in oci layout: %w", path, err)
	}
	return d, m, nil
}

func (w *Writer) placeFile(path, mediaType string, also io.Writer) (ispec.Descriptor, Method, error) {
	if w.done {
		return ispec.Descriptor{}, "", fmt.Errorf("writer for %s already finished", w.dir)
	}
	src, err := os.Open(path)
	if err != nil {
		return ispec.Descriptor{}, "", err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return ispec.Descriptor{}, "", err
	}
	if !fi.Mode().IsRegular() {
		return ispec.Descriptor{}, "", fmt.Errorf("not a regular file (%s)", fi.Mode().Type())
	}
	tmp := w.tempName()
	h := sha256.New()
	var n int64
	var method Method
	for _, m := range w.methods {
		switch m {
		case MethodReflink:
			err = reflink(src, tmp)
		case MethodHardlink:
			err = os.Link(path, tmp)
		case MethodCopy:
			n, err = copyFile(src, tmp, h, also)
		}
		if err == nil {
			method = m
			break
		}
		os.Remove(tmp)
		if m == MethodCopy {
			return ispec.Descriptor{}, "", err
		}
	}
	if method == "" {
		return ispec.Descriptor{}, "", fmt.Errorf("no placement method worked (tried %v)", w.methods)
	}
	if method != MethodCopy {
		if n, err = hashFile(tmp, h, also); err != nil {
			os.Remove(tmp)
			return ispec.Descriptor{}, "", err
		}
	}
	d := digest.NewDigest(digest.SHA256, h)
	if err := w.install(tmp, d, n); err != nil {
		os.Remove(tmp)
		return ispec.Descriptor{}, "", err
	}
	return ispec.Descriptor{MediaType: mediaType, Digest: d, Size: n}, method, nil
}

// copyFile copies src (from its current offset, which is 0) to a new file dst,
// feeding h and also as well, and syncs dst.
func copyFile(src *os.File, dst string, h hash.Hash, also io.Writer) (int64, error) {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := pump(src, io.MultiWriter(f, h), also)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// hashFile streams the file at path into h and also.
func hashFile(path string, h hash.Hash, also io.Writer) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return pump(f, h, also)
}

// pumpBlock is the read size of pump; pumpBuffers blocks are in flight.
const (
	pumpBlock   = 1 << 20
	pumpBuffers = 4
)

// pump copies r to w and, when also is not nil, to also on a second
// goroutine, so that two hashes of one stream use two cores. Blocks reach
// also in order; w and also each see every byte.
func pump(r io.Reader, w io.Writer, also io.Writer) (int64, error) {
	if also == nil {
		return io.CopyBuffer(w, r, make([]byte, pumpBlock))
	}
	free := make(chan []byte, pumpBuffers)
	for range pumpBuffers {
		free <- make([]byte, pumpBlock)
	}
	work := make(chan []byte, pumpBuffers)
	done := make(chan error, 1)
	go func() {
		var err error
		for b := range work {
			if err == nil {
				_, err = also.Write(b)
			}
			free <- b[:cap(b)]
		}
		done <- err
	}()
	var total int64
	var err error
	for {
		b := <-free
		n, rerr := io.ReadFull(r, b)
		if n > 0 {
			if _, werr := w.Write(b[:n]); werr != nil {
				err = werr
			}
			total += int64(n)
			work <- b[:n]
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil || err != nil {
			err = cmp.Or(err, rerr)
			break
		}
	}
	close(work)
	if aerr := <-done; err == nil {
		err = aerr
	}
	return total, err
}

// Commit writes the manifest m (schemaVersion and mediaType filled in when
// empty), index.json and oci-layout, syncs, and moves the layout to its
// destination, replacing an old layout there. Every descriptor in m must name
// a blob written through this Writer, with the same size. It returns the
// manifest's descriptor. On error nothing is left behind.
func (w *Writer) Commit(m ispec.Manifest) (ispec.Descriptor, error) {
	d, err := w.commit(m)
	if err != nil {
		w.Abort()
		return ispec.Descriptor{}, fmt.Errorf("commit oci layout %s: %w", w.dir, err)
	}
	return d, nil
}

func (w *Writer) commit(m ispec.Manifest) (ispec.Descriptor, error) {
	if w.done {
		return ispec.Descriptor{}, errors.New("writer already finished")
	}
	if m.SchemaVersion == 0 {
		m.SchemaVersion = 2
	}
	if m.MediaType == "" {
		m.MediaType = ispec.MediaTypeImageManifest
	}
	refs := append([]ispec.Descriptor{m.Config}, m.Layers...)
	for _, d := range refs {
		if err := checkDescriptor(d); err != nil {
			return ispec.Descriptor{}, err
		}
		size, ok := w.blobs[d.Digest]
		if !ok {
			return ispec.Descriptor{}, fmt.Errorf("manifest refers to blob %s, which was not written", d.Digest)
		}
		if size != d.Size {
			return ispec.Descriptor{}, fmt.Errorf("manifest gives blob %s size %d, it has %d bytes", d.Digest, d.Size, size)
		}
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	md, err := w.AddBlob(ispec.MediaTypeImageManifest, mb)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	md.ArtifactType = m.ArtifactType
	idx := ispec.Index{MediaType: ispec.MediaTypeImageIndex, Manifests: []ispec.Descriptor{md}}
	idx.SchemaVersion = 2
	ib, err := json.Marshal(idx)
	if err != nil {
		return ispec.Descriptor{}, err
	}
	lb, err := json.Marshal(ispec.ImageLayout{Version: ispec.ImageLayoutVersion})
	if err != nil {
		return ispec.Descriptor{}, err
	}
	if err := writeFileSync(filepath.Join(w.tmp, ispec.ImageIndexFile), ib); err != nil {
		return ispec.Descriptor{}, err
	}
	if err := writeFileSync(filepath.Join(w.tmp, ispec.ImageLayoutFile), lb); err != nil {
		return ispec.Descriptor{}, err
	}
	for _, d := range []string{filepath.Join(w.tmp, ispec.ImageBlobsDir, string(digest.SHA256)), filepath.Join(w.tmp, ispec.ImageBlobsDir), w.tmp} {
		if err := syncDir(d); err != nil {
			return ispec.Descriptor{}, err
		}
	}
	if err := os.Chmod(w.tmp, 0o755); err != nil {
		return ispec.Descriptor{}, err
	}
	if err := w.replace(); err != nil {
		return ispec.Descriptor{}, err
	}
	w.done = true
	return md, nil
}

// replace moves w.tmp to w.dir. An existing layout (checked again) is swapped
// out atomically where the platform can (RENAME_EXCHANGE), then removed.
func (w *Writer) replace() error {
	if err := checkReplaceable(w.dir); err != nil {
		return err
	}
	if _, err := os.Lstat(w.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(w.tmp, w.dir); err != nil {
			return err
		}
	} else {
		if err := exchange(w.tmp, w.dir); err != nil {
			return err
		}
		// w.tmp now holds the old layout; the new one is in place.
		w.done = true
		if err := os.RemoveAll(w.tmp); err != nil {
			return fmt.Errorf("new layout in place, but removing the old one (now %s) failed: %w", w.tmp, err)
		}
	}
	return syncDir(filepath.Dir(w.dir))
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
