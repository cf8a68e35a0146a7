package disk

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/disklayout"
	"github.com/qcluster/qcluster/imagebuild/osimage"
)

// writeImage writes an OS image with the payloads of opts to dir/name.
func writeImage(t *testing.T, dir, name, arch, systemCompression string, payloads ...string) *osimage.Image {
	t.Helper()
	var srcs []osimage.PayloadSource
	for _, p := range payloads {
		c := ""
		if p == osimage.PayloadSystem {
			c = systemCompression
		}
		srcs = append(srcs, osimage.PayloadSource{Name: p, Path: filepath.Join(dir, p), Compression: c})
	}
	out := filepath.Join(dir, name)
	if err := osimage.Write(out, osimage.ProductInfo{ID: "testos", Version: "1", Architecture: arch}, srcs); err != nil {
		t.Fatal(err)
	}
	img, err := osimage.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// A disk from an OS image: unverified blobs take the kernel's fast paths,
// verified ones go through the chunk verifier; both give the same disk.
func TestImageBlobs(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(t, dir) // writes dir/kernel.efi and dir/system
	opts.Size = 136 << 20
	img := writeImage(t, dir, "image", Architecture, "", osimage.PayloadKernel, osimage.PayloadSystem)
	var sums [2][32]byte
	for i, verified := range []bool{false, true} {
		k, s, err := ImageBlobs(img, verified)
		if err != nil {
			t.Fatal(err)
		}
		opts.Kernel, opts.System = k, s
		path := filepath.Join(dir, "disk.raw")
		st, err := Write(context.Background(), path, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range st.Copied {
			if c.Partition == disklayout.NameSystemA || c.Path == disklayout.KernelPath {
				t.Logf("verified=%v: %s %s by %v", verified, c.Partition, c.Path, c.Method)
				if fast := c.Method != blockdev.MethodReadWrite; fast == verified {
					t.Errorf("verified=%v: %s %s took %v", verified, c.Partition, c.Path, c.Method)
				}
			}
		}
		sums[i] = sha(t, path)
	}
	if sums[0] != sums[1] {
		t.Error("verified and unverified payloads gave different disks")
	}
}

func TestImageBlobsRejects(t *testing.T) {
	dir := t.TempDir()
	testOptions(t, dir)
	for _, c := range []struct {
		name     string
		img      *osimage.Image
		verified bool
		want     error
		msg      string
	}{
		{"wrong architecture", writeImage(t, dir, "arm", "aarch64", "", osimage.PayloadKernel, osimage.PayloadSystem), true, osimage.ErrArchitecture, `is for "aarch64", want "x86_64"`},
		{"no system", writeImage(t, dir, "nosys", Architecture, "", osimage.PayloadKernel), true, osimage.ErrNotFound, `no "system" payload`},
		{"no kernel", writeImage(t, dir, "nokernel", Architecture, "", osimage.PayloadSystem), false, osimage.ErrNotFound, `no "kernel.efi" payload`},
		{"compressed unverified", writeImage(t, dir, "zstd", Architecture, osimage.CompressionZstd, osimage.PayloadKernel, osimage.PayloadSystem), false, osimage.ErrCompressed, "uncompressed layer"},
	} {
		_, _, err := ImageBlobs(c.img, c.verified)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err = %v; want one line wrapping %v and containing %q", c.name, err, c.want, c.msg)
		}
	}
}
