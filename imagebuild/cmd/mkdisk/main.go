// Command mkdisk writes a qcluster node disk (see imagebuild/disk) from an
// OS image and a boot loader:
//
//	go run ./imagebuild/cmd/mkdisk --image out/testos --loader out/loader.efi \
//	    --size 3GiB --seed node0 [--unverified] [--esp-file PATH=FILE ...] --out node0.raw
//
// Sizes are bytes, or a number with K/KiB, M/MiB, G/GiB or T/TiB. With
// --unverified the payloads are read as the image's raw blob files, which the
// kernel can reflink into the disk (milliseconds on XFS or btrfs); without it
// every chunk is checked against the image's config as it is copied.
//
// The disk is written to a temporary file beside --out and renamed into
// place; an existing --out is replaced, and on error nothing is left. On
// success one line per payload goes to stdout: partition, path in the ESP,
// bytes and the copy method, separated by tabs. Errors are one line on
// stderr, exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/imagebuild/disk"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/cliflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "mkdisk: %v\n", err)
		os.Exit(1)
	}
}

// sizeFlag is a byte count given as bytes or with a binary unit.
type sizeFlag int64

func (s *sizeFlag) String() string { return blockdev.FormatSize(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	n, err := blockdev.ParseSize(v)
	*s = sizeFlag(n)
	return err
}

const usage = `usage: mkdisk --image DIR --loader FILE --out FILE [--size 3GiB] [--seed S]
              [--unverified] [--esp-file PATH=FILE ...]

Writes a node disk (GPT: ESP, SYSTEM-A, SYSTEM-B, DATA) for the OS image in
DIR to FILE and prints how each payload was copied.

flags:
`

// run is mkdisk without the process around it: it returns flag.ErrHelp
// after printing the usage for --help.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkdisk", flag.ContinueOnError)
	var image, loader, out, seed string
	var unverified, verbose bool
	var espFiles []string
	size, espSize, systemSize := sizeFlag(disk.DefaultSize), sizeFlag(disk.DefaultESPSize), sizeFlag(disk.DefaultSystemSize)
	fs.StringVar(&image, "image", "", "OS image `DIR` (OCI layout with kernel.efi and system payloads; required)")
	fs.StringVar(&loader, "loader", "", "EFI boot loader `FILE`, e.g. systemd-bootx64.efi (required)")
	fs.StringVar(&out, "out", "", "disk image `FILE` to write (required)")
	fs.StringVar(&seed, "seed", "", "seed `S` for the disk's GUIDs and ESP serial, e.g. the node name (default empty)")
	fs.Var(&size, "size", "disk `SIZE`")
	fs.Var(&espSize, "esp-size", "ESP `SIZE`, whole MiB")
	fs.Var(&systemSize, "system-size", "`SIZE` of SYSTEM-A and of SYSTEM-B, whole MiB")
	fs.BoolVar(&unverified, "unverified", false, "copy payloads without checking their chunk hashes, so they can be reflinked (uncompressed images only)")
	fs.Func("esp-file", "add `PATH=FILE` to the ESP: its path there and the file holding it (repeatable)", func(v string) error { espFiles = append(espFiles, v); return nil })
	fs.BoolVar(&verbose, "v", false, "log each stage on stderr")
	if err := cliflag.Parse(fs, args, stdout, usage); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{{"--image", image}, {"--loader", loader}, {"--out", out}} {
		if f.v == "" {
			return fmt.Errorf("%s is required (see --help)", f.name)
		}
	}
	opts := disk.Options{Size: int64(size), ESPSize: int64(espSize), SystemSize: int64(systemSize), Seed: seed}
	if verbose {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	l, err := blockdev.NewFileBlob(loader)
	if err != nil {
		return fmt.Errorf("--loader: %w", err)
	}
	opts.Loader = l
	for _, e := range espFiles {
		p, file, ok := strings.Cut(e, "=")
		if !ok || p == "" || file == "" {
			return fmt.Errorf("--esp-file %q: want PATH=FILE", e)
		}
		b, err := blockdev.NewFileBlob(file)
		if err != nil {
			return fmt.Errorf("--esp-file: %w", err)
		}
		opts.ExtraESPFiles = append(opts.ExtraESPFiles, disk.File{Path: p, Blob: b})
	}
	img, err := osimage.Open(image)
	if err != nil {
		return err
	}
	if opts.Kernel, opts.System, err = disk.ImageBlobs(img, !unverified); err != nil {
		return err
	}
	st, err := disk.Write(ctx, out, opts)
	if err != nil {
		return err
	}
	for _, c := range st.Copied {
		fmt.Fprintf(stdout, "%s\t%s\t%d\t%s\n", c.Partition, c.Path, c.Bytes, c.Method)
	}
	return nil
}
