package main

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// verityArg is the kernel command line parameter that carries the system
// slot's dm-verity table: the fields of the kernel's verity target in table
// order, without the two device fields, separated by commas:
//
//	qcluster.verity=<version>,<data block size>,<hash block size>,<data blocks>,<hash start block>,<algorithm>,<root hash hex>,<salt hex or ->[,<optional arg>...]
//
// e.g. qcluster.verity=1,4096,4096,812,813,sha256,4f…a1,- . The agent uses
// the slot's partition as data and hash device (the tree is appended).
const verityArg = "qcluster.verity"

// verityTable is the parsed qcluster.verity argument.
type verityTable struct {
	version        int
	dataBlockSize  uint32
	hashBlockSize  uint32
	dataBlocks     uint64
	hashStartBlock uint64
	algorithm      string
	rootHex        string
	saltHex        string
	optional       []string
}

// cmdlineValue returns the value of the last key=value on the command line.
func cmdlineValue(cmdline, key string) (string, bool) {
	var v string
	found := false
	for _, f := range strings.Fields(cmdline) {
		if k, val, ok := strings.Cut(f, "="); ok && k == key {
			v, found = val, true
		}
	}
	return v, found
}

// parseVerity parses a qcluster.verity value.
func parseVerity(s string) (verityTable, error) {
	var t verityTable
	f := strings.Split(s, ",")
	if len(f) < 8 {
		return t, fmt.Errorf("parse %s=%q: want at least 8 comma-separated fields, have %d", verityArg, s, len(f))
	}
	var err error
	if t.version, err = strconv.Atoi(f[0]); err != nil || (t.version != 0 && t.version != 1) {
		return t, fmt.Errorf("parse %s: version %q is not 0 or 1", verityArg, f[0])
	}
	bs := func(name, v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 512 || n&(n-1) != 0 {
			return 0, fmt.Errorf("parse %s: %s %q is not a power of two ≥ 512", verityArg, name, v)
		}
		return uint32(n), nil
	}
	if t.dataBlockSize, err = bs("data block size", f[1]); err != nil {
		return t, err
	}
	if t.hashBlockSize, err = bs("hash block size", f[2]); err != nil {
		return t, err
	}
	if t.dataBlocks, err = strconv.ParseUint(f[3], 10, 64); err != nil || t.dataBlocks == 0 {
		return t, fmt.Errorf("parse %s: data blocks %q is not a positive number", verityArg, f[3])
	}
	if t.hashStartBlock, err = strconv.ParseUint(f[4], 10, 64); err != nil {
		return t, fmt.Errorf("parse %s: hash start block %q is not a number", verityArg, f[4])
	}
	t.algorithm = f[5]
	if t.algorithm == "" || strings.ContainsAny(t.algorithm, " \t") {
		return t, fmt.Errorf("parse %s: empty algorithm", verityArg)
	}
	if b, err := hex.DecodeString(f[6]); err != nil || len(b) < 16 {
		return t, fmt.Errorf("parse %s: root hash %q is not hex of at least 16 bytes", verityArg, f[6])
	}
	t.rootHex = f[6]
	if f[7] != "-" {
		if _, err := hex.DecodeString(f[7]); err != nil {
			return t, fmt.Errorf("parse %s: salt %q is neither hex nor -", verityArg, f[7])
		}
	}
	t.saltHex = f[7]
	for _, o := range f[8:] {
		if o == "" {
			return t, fmt.Errorf("parse %s: empty optional argument", verityArg)
		}
		t.optional = append(t.optional, o)
	}
	return t, nil
}

// sectors is the verity target's length in 512-byte sectors.
func (t verityTable) sectors() uint64 { return t.dataBlocks * uint64(t.dataBlockSize) / 512 }

// params is the verity target's parameter string for a device that holds
// both data and hash tree.
func (t verityTable) params(dev string) string {
	p := fmt.Sprintf("%d %s %s %d %d %d %d %s %s %s", t.version, dev, dev, t.dataBlockSize, t.hashBlockSize,
		t.dataBlocks, t.hashStartBlock, t.algorithm, t.rootHex, t.saltHex)
	if len(t.optional) > 0 {
		p += fmt.Sprintf(" %d %s", len(t.optional), strings.Join(t.optional, " "))
	}
	return p
}
