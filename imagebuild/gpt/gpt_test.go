package gpt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/internal/needs"
)

func TestStructSizes(t *testing.T) {
	for _, c := range []struct {
		v    any
		want int
	}{{mbrRecord{}, 16}, {protectiveMBR{}, 512}, {header{}, headerSize}, {entry{}, EntrySize}} {
		if got := binary.Size(c.v); got != c.want {
			t.Errorf("binary.Size(%T) = %d, want %d", c.v, got, c.want)
		}
	}
}

func TestGUID(t *testing.T) {
	g := TypeEFISystem
	if g.String() != "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" {
		t.Errorf("String() = %s", g)
	}
	// UEFI 2.10 Appendix A: the first three fields are stored little-endian.
	want := []byte{0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B}
	if d := g.disk(); !bytes.Equal(d[:], want) {
		t.Errorf("on-disk bytes % x, want % x", d, want)
	}
	if guidFromDisk(g.disk()) != g {
		t.Error("guidFromDisk(disk()) is not the identity")
	}
	for _, bad := range []string{"", "C12A7328F81F11D2BA4B00A0C93EC93B", "C12A7328-F81F-11D2-BA4B-00A0C93EC93", "G12A7328-F81F-11D2-BA4B-00A0C93EC93B", "C12A7328-F81F-11D2-BA4B0-0A0C93EC93B"} {
		if _, err := ParseGUID(bad); err == nil {
			t.Errorf("ParseGUID(%q) succeeded", bad)
		}
	}
}

var typeLinux = MustParseGUID("0FC63DAF-8483-4772-8E79-3D47DE7984E4")

func sample(size int64) Table {
	const mib = 2048 // sectors
	_, last := Usable(size)
	return Table{
		DiskGUID: MustParseGUID("11111111-2222-4333-8444-555555555555"),
		Partitions: []Partition{
			{Name: "ESP", Type: TypeEFISystem, GUID: MustParseGUID("A0000000-0000-4000-8000-000000000001"), FirstLBA: mib, LastLBA: 3*mib - 1},
			{Name: "dätä ☃ with a name of 36 characters", Type: typeLinux, GUID: MustParseGUID("A0000000-0000-4000-8000-000000000002"), FirstLBA: 3 * mib, LastLBA: last, Attributes: 1 << 60},
		},
	}
}

func TestRoundTrip(t *testing.T) {
	const size = 8 << 20
	dev := blockdev.NewMemory(size)
	want := sample(size)
	if err := Write(dev, want); err != nil {
		t.Fatal(err)
	}
	got, err := Read(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, want) {
		t.Fatalf("Read after Write:\n got %+v\nwant %+v", *got, want)
	}
	// Only the two tables and the MBR are written: 1 + 2×33 sectors.
	nonzero := 0
	for i := 0; i < size; i += SectorSize {
		if !bytes.Equal(dev.Bytes()[i:i+SectorSize], make([]byte, SectorSize)) {
			nonzero++
		}
	}
	if nonzero > 1+2*33 {
		t.Errorf("%d sectors written, want at most %d", nonzero, 1+2*33)
	}
}

// Independent tools agree with the writer: sgdisk -v finds no problems and
// sfdisk sees the same partitions.
func TestTools(t *testing.T) {
	needs.Tool(t, "sgdisk", "gdisk")
	needs.Tool(t, "sfdisk", "fdisk")
	const size = 64<<20 + 5*SectorSize // an odd size: the backup must still land at the end
	path := filepath.Join(t.TempDir(), "disk.img")
	dev, err := blockdev.Create(path, size)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	tab := sample(size)
	if err := Write(dev, tab); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sgdisk", "-v", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No problems found") {
		t.Fatalf("sgdisk -v: %v\n%s", err, out)
	}
	parts := sfdisk(t, path)
	if len(parts) != len(tab.Partitions) {
		t.Fatalf("sfdisk sees %d partitions, want %d", len(parts), len(tab.Partitions))
	}
	for i, p := range tab.Partitions {
		want := SfdiskPartition{Start: p.FirstLBA, Size: p.LastLBA - p.FirstLBA + 1, Type: p.Type.String(), UUID: p.GUID.String(), Name: p.Name}
		got := parts[i]
		got.Node = ""
		if got != want {
			t.Errorf("sfdisk partition %d = %+v, want %+v", i+1, got, want)
		}
	}
}

// SfdiskPartition is one partition as `sfdisk --json` prints it.
type SfdiskPartition struct {
	Node  string `json:"node"`
	Start uint64 `json:"start"`
	Size  uint64 `json:"size"`
	Type  string `json:"type"`
	UUID  string `json:"uuid"`
	Name  string `json:"name"`
}

func sfdisk(t *testing.T, path string) []SfdiskPartition {
	t.Helper()
	out, err := exec.Command("sfdisk", "--json", path).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", path, err)
	}
	var v struct {
		PartitionTable struct {
			Label      string            `json:"label"`
			Partitions []SfdiskPartition `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("sfdisk --json: %v\n%s", err, out)
	}
	if v.PartitionTable.Label != "gpt" {
		t.Fatalf("sfdisk sees a %q label, want gpt", v.PartitionTable.Label)
	}
	return v.PartitionTable.Partitions
}

func TestReadRejectsDamage(t *testing.T) {
	const size = 4 << 20
	dev := blockdev.NewMemory(size)
	if err := Write(dev, sample(size)); err != nil {
		t.Fatal(err)
	}
	good := bytes.Clone(dev.Bytes())
	for name, off := range map[string]int{
		"MBR signature":         510,
		"primary header":        SectorSize + 40,
		"primary entry array":   2*SectorSize + 60,
		"backup header":         size - SectorSize + 40,
		"backup entry array":    size - 33*SectorSize + 200,
		"primary header CRC":    SectorSize + 16,
		"primary signature":     SectorSize,
		"backup unused entries": size - 2*SectorSize,
	} {
		b := bytes.Clone(good)
		b[off] ^= 0x40
		if _, err := Read(bytes.NewReader(b), size); !errors.Is(err, ErrInvalid) {
			t.Errorf("damaged %s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	const size = 8 << 20
	_, last := Usable(size)
	for name, mutate := range map[string]func(*Table){
		"overlap":        func(t *Table) { t.Partitions[1].FirstLBA = t.Partitions[0].LastLBA },
		"past the end":   func(t *Table) { t.Partitions[1].LastLBA = last + 1 },
		"into the array": func(t *Table) { t.Partitions[0].FirstLBA = 33 },
		"reversed":       func(t *Table) { t.Partitions[0].LastLBA = t.Partitions[0].FirstLBA - 1 },
		"zero type":      func(t *Table) { t.Partitions[0].Type = GUID{} },
		"long name":      func(t *Table) { t.Partitions[0].Name = strings.Repeat("x", 37) },
		"too many": func(t *Table) {
			t.Partitions = nil
			for i := range 129 {
				t.Partitions = append(t.Partitions, Partition{Type: typeLinux, FirstLBA: uint64(2048 + i), LastLBA: uint64(2048 + i)})
			}
		},
	} {
		tab := sample(size)
		tab.Partitions = append([]Partition(nil), tab.Partitions...)
		mutate(&tab)
		dev := blockdev.NewMemory(size)
		if err := Write(dev, tab); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
		if !bytes.Equal(dev.Bytes(), make([]byte, size)) {
			t.Errorf("%s: a rejected table wrote bytes", name)
		}
	}
	if err := Write(blockdev.NewMemory(66*SectorSize), Table{}); err == nil {
		t.Error("Write on a 66-sector disk succeeded")
	}
}

// disk builds a fuzzing disk of the given sectors from head (the MBR, the
// primary header and what follows), mirrored as the backup table at the end
// when mirror is set, with every CRC made valid when fix is set. Keeping
// the input to the first sectors lets the fuzzer's minimiser work on
// kilobytes rather than the whole disk.
func disk(head []byte, sectors uint16, mirror, fix bool) []byte {
	b := make([]byte, int(max(sectors, 3))*SectorSize)
	copy(b, head)
	last := uint64(len(b)/SectorSize - 1)
	h := b[SectorSize : 2*SectorSize]
	es, n, at := binary.LittleEndian.Uint32(h[84:]), binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint64(h[72:])
	size := uint64(es) * uint64(n)
	array := (size + SectorSize - 1) / SectorSize
	sane := size <= maxArrayBytes && at < last && array < last && at+array <= last+1
	if mirror && sane && array+1 < last {
		bh := b[last*SectorSize:]
		copy(bh, h)
		binary.LittleEndian.PutUint64(bh[24:], last)
		binary.LittleEndian.PutUint64(bh[32:], 1)
		binary.LittleEndian.PutUint64(bh[72:], last-array)
		copy(b[(last-array)*SectorSize:last*SectorSize], b[at*SectorSize:at*SectorSize+size])
	}
	if fix {
		for _, lba := range []uint64{1, last} {
			h := b[lba*SectorSize : (lba+1)*SectorSize]
			es, n, at := binary.LittleEndian.Uint32(h[84:]), binary.LittleEndian.Uint32(h[80:]), binary.LittleEndian.Uint64(h[72:])
			if size := uint64(es) * uint64(n); size <= maxArrayBytes && at <= last && size <= (last+1-at)*SectorSize {
				binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(b[at*SectorSize:at*SectorSize+size]))
			}
			if hs := binary.LittleEndian.Uint32(h[12:]); hs >= headerSize && hs <= SectorSize {
				binary.LittleEndian.PutUint32(h[16:], 0)
				binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:hs]))
			}
		}
	}
	return b
}

// seed returns the fuzz seed: the MBR, the primary header and its first
// four entries (declared as a four-entry array) of an 80-sector disk.
func seed(t testing.TB) ([]byte, uint16) {
	const sectors = 80
	dev := blockdev.NewMemory(sectors * SectorSize)
	_, last := Usable(dev.Size())
	if err := Write(dev, Table{Partitions: []Partition{{Name: "a", Type: typeLinux, FirstLBA: 34, LastLBA: last}}}); err != nil {
		t.Fatal(err)
	}
	head := bytes.Clone(dev.Bytes()[:3*SectorSize])
	binary.LittleEndian.PutUint32(head[SectorSize+80:], 4)
	return head, sectors
}

// FuzzReadGPT: Read never panics, and whatever it accepts and Write can
// express reads back the same.
func FuzzReadGPT(f *testing.F) {
	head, sectors := seed(f)
	f.Add(head, uint16(sectors), true, true)
	f.Add(head, uint16(sectors), false, true)
	f.Add(head, uint16(2048), true, false)
	f.Fuzz(func(t *testing.T, head []byte, sectors uint16, mirror, fix bool) {
		b := disk(head, sectors, mirror, fix)
		got, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		dev := blockdev.NewMemory(int64(len(b)))
		if err := Write(dev, *got); err != nil {
			return // valid, but outside what the writer emits (e.g. other usable LBAs)
		}
		again, err := Read(dev, dev.Size())
		if err != nil {
			t.Fatalf("Read of a written table: %v", err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Fatalf("round trip changed the table:\n got %+v\nwant %+v", again, got)
		}
	})
}

// TestFuzzSeedReads makes sure the fuzz seed is a valid table, so the fuzzer
// starts past the checks.
func TestFuzzSeedReads(t *testing.T) {
	head, sectors := seed(t)
	b := disk(head, sectors, true, true)
	if tab, err := Read(bytes.NewReader(b), int64(len(b))); err != nil || len(tab.Partitions) != 1 {
		t.Fatalf("Read(seed) = %+v, %v", tab, err)
	}
}
