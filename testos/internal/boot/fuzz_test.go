package boot

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/disklayout"
)

// FuzzReadGPT feeds arbitrary disks to the GPT reader: it must return
// partitions or an error, never panic or allocate without bound.
func FuzzReadGPT(f *testing.F) {
	f.Add(validGPT(), uint16(0), byte(0))
	f.Add(make([]byte, 34*512), uint16(0), byte(0))
	f.Fuzz(func(t *testing.T, disk []byte, at uint16, flip byte) {
		if len(disk) > 0 {
			disk[int(at)%len(disk)] ^= flip
		}
		parts, err := ReadGPT(bytes.NewReader(disk), 512)
		if err != nil {
			return
		}
		for _, p := range parts {
			if p.LastLBA < p.FirstLBA || p.Number < 1 {
				t.Fatalf("invalid partition accepted: %+v", p)
			}
		}
	})
}

// validGPT is a minimal disk with one partition, CRCs right.
func validGPT() []byte {
	disk := make([]byte, 40*512)
	le := binary.LittleEndian
	e := disk[2*512:]
	copy(e[0:16], []byte{0x20, 0x4d, 0x04, 0xd1, 0x0e, 0x8e, 0xbf, 0x4a, 0x85, 0x22, 0x0c, 0x9d, 0x46, 0x90, 0x98, 0xa3})
	le.PutUint64(e[32:], 34)
	le.PutUint64(e[40:], 39)
	for i, r := range "DATA" {
		le.PutUint16(e[56+2*i:], uint16(r))
	}
	h := disk[512:]
	copy(h, "EFI PART")
	le.PutUint32(h[8:], 0x00010000)
	le.PutUint32(h[12:], 92)
	le.PutUint64(h[72:], 2)
	le.PutUint32(h[80:], 4)
	le.PutUint32(h[84:], 128)
	le.PutUint32(h[88:], crc32.ChecksumIEEE(disk[2*512:2*512+4*128]))
	le.PutUint32(h[16:], crc32.ChecksumIEEE(h[:92]))
	return disk
}

func TestValidGPTSeed(t *testing.T) {
	parts, err := ReadGPT(bytes.NewReader(validGPT()), 512)
	if err != nil || len(parts) != 1 || parts[0].Name != "DATA" || parts[0].TypeGUID != disklayout.TypeData {
		t.Fatalf("seed GPT: %+v, %v", parts, err)
	}
}

// FuzzParseVerity: a parsed table's parameter string has no spaces inside
// fields and as many fields as the verity target expects.
func FuzzParseVerity(f *testing.F) {
	f.Add("1,4096,4096,812,813,sha256," + strings.Repeat("ab", 32) + ",-")
	f.Add("1,4096,4096,8,9,sha256," + strings.Repeat("00", 32) + ",0011,ignore_zero_blocks")
	f.Fuzz(func(t *testing.T, s string) {
		tab, err := ParseVerity(s)
		if err != nil {
			return
		}
		fields := strings.Fields(tab.Params("/dev/x"))
		want := 10
		if len(tab.Optional) > 0 {
			want += 1 + len(tab.Optional)
		}
		if len(fields) != want {
			t.Fatalf("ParseVerity(%q) gives %d parameter fields, want %d: %q", s, len(fields), want, tab.Params("/dev/x"))
		}
	})
}
