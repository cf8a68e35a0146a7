package boot

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// VerityArg is the kernel command line parameter that carries the system
// slot's dm-verity table: the fields of the kernel's verity target in table
// order, without the two device fields, separated by commas:
//
//	qcluster.verity=<version>,<data block size>,<hash block size>,<data blocks>,<hash start block>,<algorithm>,<root hash hex>,<salt hex or ->[,<optional arg>...]
//
// e.g. qcluster.verity=1,4096,4096,812,813,sha256,4f…a1,- . The agent uses
// the slot's partition as data and hash device (the tree is appended).
const VerityArg = "qcluster.verity"

// VerityTable is the parsed qcluster.verity argument.
type VerityTable struct {
	Version        int
	DataBlockSize  uint32 // bytes
	HashBlockSize  uint32 // bytes
	DataBlocks     uint64
	HashStartBlock uint64 // in hash blocks from the device's start
	Algorithm      string
	RootHex        string
	SaltHex        string   // "-" for none
	Optional       []string // optional target arguments
}

// CmdlineValue returns the value of the last key=value on the command line.
func CmdlineValue(cmdline, key string) (string, bool) {
	var v string
	found := false
	for _, f := range strings.Fields(cmdline) {
		if k, val, ok := strings.Cut(f, "="); ok && k == key {
			v, found = val, true
		}
	}
	return v, found
}

// ParseVerity parses a qcluster.verity value.
func ParseVerity(s string) (VerityTable, error) {
	var t VerityTable
	f := strings.Split(s, ",")
	if len(f) < 8 {
		return t, fmt.Errorf("parse %s=%q: want at least 8 comma-separated fields, have %d", VerityArg, s, len(f))
	}
	var err error
	if t.Version, err = strconv.Atoi(f[0]); err != nil || (t.Version != 0 && t.Version != 1) {
		return t, fmt.Errorf("parse %s: version %q is not 0 or 1", VerityArg, f[0])
	}
	bs := func(name, v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 512 || n&(n-1) != 0 {
			return 0, fmt.Errorf("parse %s: %s %q is not a power of two ≥ 512", VerityArg, name, v)
		}
		return uint32(n), nil
	}
	if t.DataBlockSize, err = bs("data block size", f[1]); err != nil {
		return t, err
	}
	if t.HashBlockSize, err = bs("hash block size", f[2]); err != nil {
		return t, err
	}
	if t.DataBlocks, err = strconv.ParseUint(f[3], 10, 64); err != nil || t.DataBlocks == 0 {
		return t, fmt.Errorf("parse %s: data blocks %q is not a positive number", VerityArg, f[3])
	}
	if t.HashStartBlock, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return t, fmt.Errorf("parse %s: hash start block %q is not a number", VerityArg, f[4])
	}
	t.Algorithm = f[5]
	if t.Algorithm == "" || hasSpace(t.Algorithm) {
		return t, fmt.Errorf("parse %s: algorithm %q is empty or holds white space", VerityArg, t.Algorithm)
	}
	if b, err := hex.DecodeString(f[6]); err != nil || len(b) < 16 {
		return t, fmt.Errorf("parse %s: root hash %q is not hex of at least 16 bytes", VerityArg, f[6])
	}
	t.RootHex = f[6]
	if f[7] != "-" {
		if _, err := hex.DecodeString(f[7]); err != nil || f[7] == "" {
			return t, fmt.Errorf("parse %s: salt %q is neither hex nor -", VerityArg, f[7])
		}
	}
	t.SaltHex = f[7]
	for _, o := range f[8:] {
		if o == "" || hasSpace(o) {
			return t, fmt.Errorf("parse %s: optional argument %q is empty or holds white space", VerityArg, o)
		}
		t.Optional = append(t.Optional, o)
	}
	return t, nil
}

// Sectors is the verity target's length in 512-byte sectors.
func (t VerityTable) Sectors() uint64 { return t.DataBlocks * uint64(t.DataBlockSize) / 512 }

// Params is the verity target's parameter string for a device that holds
// both data and hash tree.
func (t VerityTable) Params(dev string) string {
	p := fmt.Sprintf("%d %s %s %d %d %d %d %s %s %s", t.Version, dev, dev, t.DataBlockSize, t.HashBlockSize,
		t.DataBlocks, t.HashStartBlock, t.Algorithm, t.RootHex, t.SaltHex)
	if len(t.Optional) > 0 {
		p += fmt.Sprintf(" %d %s", len(t.Optional), strings.Join(t.Optional, " "))
	}
	return p
}

// hasSpace reports white space (any the kernel's table parser or
// strings.Fields would split on) or NUL in a table field.
func hasSpace(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == 0 }) >= 0
}
