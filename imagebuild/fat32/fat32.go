// Package fat32 writes a FAT32 file system in one pass, for EFI system
// partitions: the files are known up front, the volume is planned (geometry,
// directory sizes, every cluster) before a byte is written, and each file's
// data is streamed into the device in a single contiguous copy, which
// blockdev.Copy can turn into a reflink.
//
// Layout, as mkfs.fat lays out a volume of the same size: 512-byte sectors,
// 32 reserved sectors with the boot sector at 0, FSInfo at 1 and their
// backups at 6 and 7, two FATs, the root directory at cluster 2, sectors per
// cluster from the Microsoft table mkfs.fat uses (1 up to 260 MiB, 8 up to
// 8 GiB, 16, 32, then 64), lowered when needed to keep at least 65525
// clusters. Each FAT is padded so that the data area starts on a 4 KiB
// boundary, and every file of at least 4 KiB starts on a 4 KiB boundary of
// the volume, so the data of a volume placed at an aligned offset can share
// blocks with its source files.
//
// Output is deterministic: directory entries are sorted by name, clusters
// are assigned in that order (directories first), and the volume serial,
// label and the one timestamp every entry carries are options, never the
// clock. Names are VFAT long names (UTF-16, with checksummed long-name
// entries) plus generated 8.3 aliases; a name that is a valid upper-case 8.3
// name is stored as that alone. Subdirectories carry "." and "..", with ".."
// pointing at cluster 0 when the parent is the root. FSInfo holds the exact
// free cluster count and the next free cluster.
//
// Limits: write-once (no updates, no deletion); FAT32 only, so volumes of at
// least about 33 MiB and at most 2 TiB; files under 4 GiB; no attributes
// other than archive and directory; names compared case-insensitively by
// strings.ToUpper, and two names equal under it are an error rather than a
// silent merge.
//
// This package exists because go-diskfs v1.9.4's FAT32 fails fsck.fat (a
// wrong ".." in first-level directories, an uninitialised FSInfo free count,
// a FAT two entries short for some sizes), cannot choose the volume serial,
// and rewrites both FATs for every write (31k pwrite64 calls for one 16 MB
// file); see the project's FACTS.md.
package fat32

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
)

// File is a file to put on the volume.
type File struct {
	// Path is the file's slash-separated path from the root, such as
	// "EFI/BOOT/BOOTX64.EFI"; a leading slash is ignored. Parent directories
	// are created as needed.
	Path string
	// Blob is the content; at most 4 GiB - 1 bytes.
	Blob blockdev.Blob
}

// Options are the volume's identity. The zero value is valid.
type Options struct {
	// Label is the volume label, up to 11 characters of A–Z, 0–9, space and
	// $%'-_@~`!(){}^#&. Default "": no label ("NO NAME" in the boot sector).
	Label string
	// Serial is the volume serial number (volume ID). Default 0.
	Serial uint32
	// Time is every entry's creation, modification and access time, taken in
	// its own location (FAT stores local time without a zone), in 2 s steps
	// (creation in 10 ms), years 1980–2107. Default: 1980-01-01 00:00:00.
	Time time.Time
	// HiddenSectors is the number of 512-byte sectors before the volume on
	// its disk (the partition's first LBA), recorded in the boot sector.
	// Default 0.
	HiddenSectors uint32
}

// fileAlign is the alignment, in bytes from the volume's start, of the data
// of files at least this large: the block size of ext4 and XFS, so reflink
// can share the blocks.
const fileAlign = 4096

// node is a file or directory in the plan.
type node struct {
	name     string // long name; "" for the root
	short    [11]byte
	lfn      bool // needs long-name entries
	dir      bool
	children []*node // sorted by name
	parent   *node
	blob     blockdev.Blob
	size     int64  // file size in bytes
	cluster  uint32 // first cluster; 0 for empty files
	clusters uint32 // clusters allocated
	path     string // for messages and results
}

// entries is the number of 32-byte directory entries n takes in its parent.
func (n *node) entries() int {
	if !n.lfn {
		return 1
	}
	return 1 + (len(utf16.Encode([]rune(n.name)))+lfnChars-1)/lfnChars
}

// Layout is a planned volume: geometry, directory tree and cluster
// assignment. Write puts it on a device.
type Layout struct {
	opts         Options
	totalSectors uint32
	secPerClus   uint32
	fatSectors   uint32
	clusters     uint32 // data clusters, numbered 2..clusters+1
	root         *node
	dirs         []*node // every directory, root first, in allocation order
	files        []*node // every non-empty file, in allocation order
	allFiles     []*node // every file, in path order
	next         uint32  // first cluster after the last allocated one
	used         uint32  // clusters allocated
}

// Plan lays out a volume of size bytes holding files. It fails when the size
// cannot be FAT32 or the files do not fit, saying by how much.
func Plan(size int64, files []File, opts Options) (*Layout, error) {
	l := &Layout{opts: opts}
	if l.opts.Time.IsZero() {
		l.opts.Time = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if _, _, _, err := dosTime(l.opts.Time); err != nil {
		return nil, fmt.Errorf("plan FAT32 volume: %w", err)
	}
	if err := checkLabel(opts.Label); err != nil {
		return nil, fmt.Errorf("plan FAT32 volume: %w", err)
	}
	if err := l.geometry(size); err != nil {
		return nil, fmt.Errorf("plan FAT32 volume: %w", err)
	}
	if err := l.tree(files); err != nil {
		return nil, fmt.Errorf("plan FAT32 volume: %w", err)
	}
	if err := l.allocate(); err != nil {
		return nil, fmt.Errorf("plan FAT32 volume: %w", err)
	}
	return l, nil
}

// ClusterSize is the cluster size in bytes.
func (l *Layout) ClusterSize() int64 { return int64(l.secPerClus) * sectorSize }

// Clusters is the number of data clusters.
func (l *Layout) Clusters() int { return int(l.clusters) }

// Used is the space allocated to directories and files, in bytes.
func (l *Layout) Used() int64 { return int64(l.used) * l.ClusterSize() }

// Size is the volume size in bytes.
func (l *Layout) Size() int64 { return int64(l.totalSectors) * sectorSize }

// dataStart is the byte offset of cluster 2.
func (l *Layout) dataStart() int64 {
	return int64(reserved+numFATs*l.fatSectors) * sectorSize
}

// clusterOffset is the byte offset of cluster c.
func (l *Layout) clusterOffset(c uint32) int64 {
	return l.dataStart() + int64(c-2)*l.ClusterSize()
}

// geometry picks sectors per cluster and the FAT size for size bytes.
func (l *Layout) geometry(size int64) error {
	if size%sectorSize != 0 {
		return fmt.Errorf("volume size %d is not a multiple of %d", size, sectorSize)
	}
	if size/sectorSize > 0xFFFFFFFF {
		return fmt.Errorf("volume size %d is over FAT32's 2 TiB", size)
	}
	total := uint32(size / sectorSize)
	l.totalSectors = total
	// Microsoft's FAT32 table (§3.5), which mkfs.fat follows.
	var spc uint32
	switch {
	case total <= 532480:
		spc = 1
	case total <= 16777216:
		spc = 8
	case total <= 33554432:
		spc = 16
	case total <= 67108864:
		spc = 32
	default:
		spc = 64
	}
	for ; spc >= 1; spc /= 2 {
		if total <= reserved {
			break
		}
		// Size the FAT for an upper bound of the cluster count, then pad it
		// so the data area starts on a 4 KiB and cluster boundary.
		upper := (total - reserved) / spc
		fat := (uint64(upper)+2)*4 + sectorSize - 1
		fatSectors := uint32(fat / sectorSize)
		pad := max(4, spc/2)
		fatSectors = (fatSectors + pad - 1) / pad * pad
		meta := uint64(reserved) + numFATs*uint64(fatSectors)
		if meta >= uint64(total) {
			continue
		}
		clusters := (total - uint32(meta)) / spc
		if clusters >= minClusters {
			l.secPerClus, l.fatSectors, l.clusters = spc, fatSectors, min(clusters, maxClusters)
			return nil
		}
	}
	return fmt.Errorf("volume of %s is too small for FAT32, which needs %d clusters (about 33 MiB)", blockdev.FormatSize(size), minClusters)
}

// tree builds the directory tree from files and assigns short names.
func (l *Layout) tree(files []File) error {
	l.root = &node{dir: true, path: "/"}
	key := func(s string) string { return strings.ToUpper(s) }
	index := map[*node]map[string]*node{}
	for _, f := range files {
		p := strings.TrimPrefix(f.Path, "/")
		parts := strings.Split(p, "/")
		if f.Blob == nil {
			return fmt.Errorf("file %q has no content", f.Path)
		}
		if f.Blob.Size() < 0 || f.Blob.Size() > 0xFFFFFFFF {
			return fmt.Errorf("file %q is %d bytes, FAT32 holds at most 4 GiB - 1", f.Path, f.Blob.Size())
		}
		dir := l.root
		for i, name := range parts {
			if err := checkName(name); err != nil {
				return fmt.Errorf("file %q: %w", f.Path, err)
			}
			last := i == len(parts)-1
			if index[dir] == nil {
				index[dir] = map[string]*node{}
			}
			here := strings.Join(parts[:i+1], "/")
			if n, ok := index[dir][key(name)]; ok {
				switch {
				case n.name != name:
					return fmt.Errorf("file %q: %q and %q differ only in case, which FAT does not tell apart", f.Path, n.path, here)
				case last || !n.dir:
					return fmt.Errorf("file %q: %q is given twice, or as both a file and a directory", f.Path, here)
				}
				dir = n
				continue
			}
			n := &node{name: name, dir: !last, parent: dir, path: here}
			if last {
				n.blob, n.size = f.Blob, f.Blob.Size()
			}
			index[dir][key(name)] = n
			dir.children = append(dir.children, n)
			dir = n
		}
	}
	// Sort, name, and list directories and files depth-first.
	var walk func(d *node) error
	walk = func(d *node) error {
		slices.SortFunc(d.children, func(a, b *node) int { return cmp.Compare(a.name, b.name) })
		taken := map[[11]byte]bool{}
		for _, c := range d.children {
			if s, ok := exactShort(c.name); ok {
				c.short = s
				taken[s] = true
			}
		}
		for _, c := range d.children {
			if _, ok := exactShort(c.name); !ok {
				c.short, c.lfn = shortName(c.name, taken), true
				taken[c.short] = true
			}
		}
		l.dirs = append(l.dirs, d)
		if n := d.dirEntries(l.opts.Label != ""); n > maxDirEntries {
			return fmt.Errorf("directory %q needs %d entries, FAT allows %d", d.path, n, maxDirEntries)
		}
		for _, c := range d.children {
			if !c.dir {
				l.allFiles = append(l.allFiles, c)
			}
		}
		for _, c := range d.children {
			if c.dir {
				if err := walk(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(l.root)
}

// maxDirEntries is the most entries a FAT directory may hold (§6.5).
const maxDirEntries = 65536

// dirEntries is the number of 32-byte entries directory d holds: "." and
// ".." in subdirectories, the volume label in the root when there is one.
func (d *node) dirEntries(label bool) int {
	n := 2
	if d.parent == nil {
		n = 0
		if label {
			n = 1
		}
	}
	for _, c := range d.children {
		n += c.entries()
	}
	return n
}

// allocate assigns contiguous clusters: directories first, then files, each
// file of at least fileAlign bytes starting on a fileAlign boundary.
func (l *Layout) allocate() error {
	cs := l.ClusterSize()
	next := uint64(rootCluster)
	var need int64
	take := func(n *node, bytes int64) {
		k := uint64(max((bytes+cs-1)/cs, 1))
		n.cluster, n.clusters = uint32(next), uint32(k)
		next += k
		need += int64(k) * cs
	}
	for _, d := range l.dirs {
		take(d, int64(d.dirEntries(l.opts.Label != ""))*entrySize)
	}
	for _, f := range l.allFiles {
		if f.size == 0 {
			continue
		}
		if f.size >= fileAlign && cs < fileAlign {
			per := uint64(fileAlign / cs)
			next = uint64(rootCluster) + (next-uint64(rootCluster)+per-1)/per*per
		}
		take(f, f.size)
		l.files = append(l.files, f)
	}
	end := uint64(l.clusters) + 2
	if next > end {
		return fmt.Errorf("files and directories need %s (%d clusters of %d bytes, with alignment), the volume of %s has %s",
			blockdev.FormatSize(int64(next-rootCluster)*cs), next-rootCluster, cs, blockdev.FormatSize(l.Size()), blockdev.FormatSize(int64(l.clusters)*cs))
	}
	l.next = uint32(next)
	l.used = uint32(need / cs)
	return nil
}
