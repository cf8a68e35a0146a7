package gpt

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GUID in its textual byte order (RFC 9562): GUID{0x12, 0x34, …}
// prints as "12345678-…". On disk the first three fields are little-endian
// (UEFI 2.10 Appendix A); the package converts when reading and writing.
type GUID [16]byte

// Partition type GUIDs used by qcluster's node disk.
var (
	// TypeEFISystem is the EFI system partition (UEFI 2.10 Table 5-7).
	TypeEFISystem = MustParseGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
)

// ParseGUID parses "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (either case).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	parts := strings.Split(s, "-")
	if len(s) != 36 || len(parts) != 5 || len(parts[0]) != 8 || len(parts[1]) != 4 ||
		len(parts[2]) != 4 || len(parts[3]) != 4 || len(parts[4]) != 12 {
		return g, fmt.Errorf("parse GUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	if _, err := hex.Decode(g[:], []byte(strings.Join(parts, ""))); err != nil {
		return g, fmt.Errorf("parse GUID %q: %w", s, err)
	}
	return g, nil
}

// MustParseGUID is ParseGUID for constants; it panics on a malformed GUID.
func MustParseGUID(s string) GUID {
	g, err := ParseGUID(s)
	if err != nil {
		panic(err)
	}
	return g
}

// String formats g in upper case, as sgdisk and the UEFI spec print GUIDs.
func (g GUID) String() string {
	h := strings.ToUpper(hex.EncodeToString(g[:]))
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// disk returns g in on-disk byte order.
func (g GUID) disk() [16]byte {
	d := g
	d[0], d[1], d[2], d[3] = g[3], g[2], g[1], g[0]
	d[4], d[5] = g[5], g[4]
	d[6], d[7] = g[7], g[6]
	return d
}

// guidFromDisk converts from on-disk byte order (the swap is its own inverse).
func guidFromDisk(d [16]byte) GUID { return GUID(GUID(d).disk()) }
