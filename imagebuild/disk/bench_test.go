package disk

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
)

// BenchmarkWrite synthesizes a default 3 GiB node disk around a 1 GiB system
// payload of random bytes and a 16 MiB kernel, in the temporary directory's
// file system (ext4 here: a real copy) and on XFS with reflink=1 (shared
// extents). scripts/bench-disk.sh sets these beside their baselines.
func BenchmarkWrite(b *testing.B) {
	for _, fs := range []struct {
		name string
		dir  func(b *testing.B) string
	}{
		{"tmpdir", func(b *testing.B) string { return b.TempDir() }},
		{"xfs", func(b *testing.B) string { return blockdevtest.XFS(b) }},
	} {
		b.Run(fs.name, func(b *testing.B) {
			dir := fs.dir(b)
			opts := testOptions(b, dir)
			opts.Size, opts.ESPSize, opts.SystemSize = 0, 0, 0 // defaults
			opts.Kernel = fileBlob(writeRandom(b, dir, "kernel.efi", 16<<20, 1))
			opts.System = fileBlob(writeRandom(b, dir, "system", 1<<30, 2))
			var st *Stats
			// A reflink first writes back the source's dirty pages: start
			// from clean payloads, as a launcher does.
			unix.Sync()
			b.ResetTimer()
			for i := range b.N {
				out := filepath.Join(dir, "node"+strconv.Itoa(i)+".raw")
				var err error
				if st, err = Write(context.Background(), out, opts); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				os.Remove(out)
				unix.Sync() // no writeback of the last disk during the next
				b.StartTimer()
			}
			b.StopTimer()
			for _, c := range st.Copied {
				if c.Method != blockdev.MethodReadWrite {
					b.Logf("%s %s: %v", c.Partition, c.Path, c.Method)
				}
			}
			b.ReportMetric(float64(st.ESP.Microseconds())/1000, "esp-ms")
			b.ReportMetric(float64(st.System.Microseconds())/1000, "system-ms")
		})
	}
}
