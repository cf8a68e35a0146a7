package verity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
	"github.com/qcluster/qcluster/imagebuild/erofs"
	"github.com/qcluster/qcluster/internal/needs"
	"github.com/qcluster/qcluster/internal/testvm"
)

var testSalt = []byte("qcluster test salt, 32 bytes....")

// image returns data followed by the hash area, as a device would hold it.
func image(t testing.TB, data []byte, p Params) ([]byte, Table) {
	t.Helper()
	var tail bytes.Buffer
	tab, err := Build(bytes.NewReader(data), int64(len(data)), &tail, p)
	if err != nil {
		t.Fatalf("Build(%d bytes): %v", len(data), err)
	}
	if int64(tail.Len()) != TailSize(int64(len(data))) {
		t.Fatalf("TailSize(%d) = %d, Build wrote %d", len(data), TailSize(int64(len(data))), tail.Len())
	}
	if tab.HashOffset%BlockSize != 0 || tab.HashOffset < int64(len(data)) || tab.HashOffset-int64(len(data)) >= BlockSize {
		t.Fatalf("HashOffset %d for %d bytes of data", tab.HashOffset, len(data))
	}
	if tab.HashStartBlock != uint64(tab.HashOffset/BlockSize)+1 {
		t.Fatalf("HashStartBlock %d, HashOffset %d", tab.HashStartBlock, tab.HashOffset)
	}
	return append(bytes.Clone(data), tail.Bytes()...), tab
}

func writeFile(t testing.TB, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// verify runs veritysetup verify on a device image holding data and hash tree.
func verify(t testing.TB, tool, path string, tab Table) error {
	t.Helper()
	argv := []string{"verify", path, path, tab.RootHex(), "--hash-offset=" + strconv.FormatInt(tab.HashOffset, 10)}
	out, err := exec.Command(tool, argv...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("veritysetup %s: %v: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func TestVeritysetupVerify(t *testing.T) {
	tool := needs.Tool(t, "veritysetup", "cryptsetup-bin")
	sizes := []int64{1, 4095, 4096, 4097, 5000, 128 * 4096, 128*4096 + 1, 129 * 4096}
	if !testing.Short() {
		sizes = append(sizes, 128*128*4096+4096) // three levels, 64 MiB
	}
	for _, size := range sizes {
		for _, salt := range [][]byte{testSalt, nil} {
			t.Run(fmt.Sprintf("%d/salt%d", size, len(salt)), func(t *testing.T) {
				data := blockdevtest.Pattern(int(size), 1)
				img, tab := image(t, data, Params{Salt: salt})
				p := writeFile(t, img)
				if err := verify(t, tool, p, tab); err != nil {
					t.Fatal(err)
				}
				// One flipped data byte must fail verification.
				img[size/2] ^= 0x40
				p2 := writeFile(t, img)
				if err := verify(t, tool, p2, tab); err == nil {
					t.Fatal("veritysetup verify accepted corrupted data")
				}
			})
		}
	}
}

var rootRE = regexp.MustCompile(`(?m)^Root hash:\s+([0-9a-f]{64})$`)

// TestMatchesVeritysetupFormat compares our hash area byte for byte with
// the one veritysetup format writes for the same data, salt and UUID.
func TestMatchesVeritysetupFormat(t *testing.T) {
	tool := needs.Tool(t, "veritysetup", "cryptsetup-bin")
	uuid := [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef}
	for _, blocks := range []int64{1, 2, 128, 129, 300} {
		for _, salt := range [][]byte{testSalt, nil} {
			t.Run(fmt.Sprintf("%d/salt%d", blocks, len(salt)), func(t *testing.T) {
				data := blockdevtest.Pattern(int(blocks*BlockSize), 2)
				ours, tab := image(t, data, Params{Salt: salt, UUID: uuid})
				p := writeFile(t, data)
				saltArg := "-"
				if len(salt) > 0 {
					saltArg = hex.EncodeToString(salt)
				}
				argv := []string{"format", p, p, "--hash-offset=" + strconv.FormatInt(tab.HashOffset, 10),
					"--salt=" + saltArg, "--uuid=01234567-89ab-cdef-0123-456789abcdef"}
				out, err := exec.Command(tool, argv...).CombinedOutput()
				if err != nil {
					t.Fatalf("veritysetup %s: %v\n%s", strings.Join(argv, " "), err, out)
				}
				m := rootRE.FindSubmatch(out)
				if m == nil {
					t.Fatalf("no root hash in veritysetup output:\n%s", out)
				}
				if string(m[1]) != tab.RootHex() {
					t.Errorf("root hash %s, veritysetup says %s", tab.RootHex(), m[1])
				}
				theirs, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(ours, theirs) {
					t.Errorf("images differ: ours %d bytes, veritysetup's %d bytes", len(ours), len(theirs))
				}
			})
		}
	}
}

// TestGolden pins the output for fixed input, so any change of bytes is seen.
func TestGolden(t *testing.T) {
	data := blockdevtest.Pattern(3*BlockSize+100, 3)
	var tail bytes.Buffer
	tab, err := Build(bytes.NewReader(data), int64(len(data)), &tail, Params{Salt: testSalt})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(tail.Bytes())
	t.Logf("tail sha256 %x, root %s", sum, tab.RootHex())
	const wantTail = "9a885702802b768ea3c76719342ad7bc03aef4b0323aa8e541e5426e6d11a869"
	const wantRoot = "6e30da9782f09958bd615e2ff54d26a1375d3ec256ceea381a89e53d2225affc"
	if hex.EncodeToString(sum[:]) != wantTail || tab.RootHex() != wantRoot {
		t.Errorf("tail sha256 %x root %s, want %s root %s", sum, tab.RootHex(), wantTail, wantRoot)
	}
	line := tab.Line("/dev/vda2")
	want := "0 32 verity 1 /dev/vda2 /dev/vda2 4096 4096 4 5 sha256 " + wantRoot + " " + hex.EncodeToString(testSalt)
	if line != want {
		t.Errorf("Line:\n got %s\nwant %s", line, want)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
		size int64
		p    Params
		want string
	}{
		{"empty", nil, 0, Params{}, "data size is 0 bytes"},
		{"salt", []byte("x"), 1, Params{Salt: make([]byte, 257)}, "salt is 257 bytes"},
		{"short", []byte("abc"), 5000, Params{}, "read data at offset 3 of 5000: unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(bytes.NewReader(tc.data), tc.size, &bytes.Buffer{}, tc.p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzBuild checks the hash area for arbitrary sizes with veritysetup.
func FuzzBuild(f *testing.F) {
	for _, s := range []uint32{1, 4096, 8191, 128*4096 + 1, 200000} {
		f.Add(s, uint8(7))
	}
	f.Fuzz(func(t *testing.T, size uint32, saltLen uint8) {
		size = size%(1<<20) + 1
		tool := needs.Tool(t, "veritysetup", "cryptsetup-bin")
		data := blockdevtest.Pattern(int(size), 4)
		img, tab := image(t, data, Params{Salt: bytes.Repeat([]byte{0xa5}, int(saltLen))})
		if err := verify(t, tool, writeFile(t, img), tab); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkBuild hashes 64 MiB of data held in memory.
func BenchmarkBuild(b *testing.B) {
	data := make([]byte, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Build(bytes.NewReader(data), int64(len(data)), io.Discard, Params{Salt: testSalt}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestGuestKernel gives the guest kernel an EROFS image with its hash tree
// appended, twice (the second copy with one flipped data byte), and the
// tables Line makes; the guest opens them through device-mapper ioctls,
// mounts them and reports the payload's hash or the error.
func TestGuestKernel(t *testing.T) {
	needs.Short(t, "boots a VM")
	qemu := needs.Tool(t, "qemu-system-x86_64", "qemu-system-x86")
	payload := blockdevtest.Pattern(1<<20, 5)
	var fsimg bytes.Buffer
	if _, err := erofs.Write(&fsimg, []erofs.Entry{
		{Path: "hello", Mode: 0o644, Data: erofs.Bytes("hello\n")},
		{Path: "payload", Mode: 0o644, Data: erofs.Bytes(payload)},
	}, erofs.Options{}); err != nil {
		t.Fatal(err)
	}
	img, tab := image(t, fsimg.Bytes(), Params{Salt: testSalt})
	good := writeFile(t, img)
	img[BlockSize+512<<10] ^= 1 // in the payload's data blocks
	bad := writeFile(t, img)

	g := testvm.Build(t, testvm.Options{
		Main:    "./testdata/dmguest",
		Modules: []string{"virtio_pci", "virtio_blk", "dm-verity", "erofs"},
		Files: map[string][]byte{
			"/verity/good.table": []byte(tab.Line("/dev/vda")),
			"/verity/bad.table":  []byte(tab.Line("/dev/vdb")),
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35", "-accel", "tcg", "-m", "512", "-nodefaults",
		"-display", "none", "-serial", "stdio", "-no-reboot",
		"-drive", "if=virtio,format=raw,readonly=on,file="+good,
		"-drive", "if=virtio,format=raw,readonly=on,file="+bad,
		"-kernel", g.Kernel, "-initrd", g.Initrd, "-append", g.Append)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("qemu: %v\n%s", err, out)
	}
	t.Logf("table: %s", tab.Line("/dev/vda"))
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "dmguest ") {
			t.Log(strings.TrimSpace(line))
		}
	}
	want := fmt.Sprintf("dmguest good: sha256=%x", sha256.Sum256(payload))
	if !strings.Contains(string(out), want) {
		t.Errorf("guest did not read the payload through dm-verity (want %q):\n%s", want, out)
	}
	if !strings.Contains(string(out), "dmguest bad: error: read /mnt/bad/payload: input/output error") {
		t.Errorf("guest read corrupted data without an error:\n%s", out)
	}
}
