// Command mkoci writes a qcluster OS image (an OCI image layout, see
// imagebuild/osimage) from payload files:
//
//	go run ./imagebuild/cmd/mkoci \
//	    --payload kernel.efi=out/kernel.efi --payload system=out/system.img \
//	    --product-id testos --product-version 0.1.0 --arch x86_64 \
//	    [--product-name NAME] [--build-info TEXT] [--component kernel=6.1.0-56] \
//	    [--zstd NAME] --out out/image
//
// Payloads are stored in the order given, uncompressed unless named by --zstd;
// uncompressed ones are reflinked, else hard-linked, else copied from their
// files. The image is written atomically: on error nothing is left at --out.
// An existing OCI layout at --out is replaced. On success the manifest digest
// is printed on stdout and one line per payload is logged on stderr. Errors
// are one line on stderr, exit status 1.
//
// Limits: mkoci does not check that the payloads make a bootable OS image
// (kernel.efi and system); images with other payloads are allowed.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/qcluster/qcluster/imagebuild/oci"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/cliflag"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(os.Stderr, "mkoci: %v\n", err)
		os.Exit(1)
	}
}

const usage = `usage: mkoci --payload NAME=FILE [--payload NAME=FILE ...] --product-id ID
             --product-version VERSION --arch ARCH --out DIR [options]

Writes a qcluster OS image (OCI layout) to DIR atomically and prints its
manifest digest. Payloads are stored in the order given.

flags:
`

// run is mkoci without the process around it: it returns flag.ErrHelp after
// printing the usage for --help.
func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkoci", flag.ContinueOnError)
	var payloads, zstd, components []string
	var info osimage.ProductInfo
	var out string
	fs.Func("payload", "add payload `NAME=FILE`: its name and the file holding it (repeatable, in image order)", func(v string) error { payloads = append(payloads, v); return nil })
	fs.Func("zstd", "store payload `NAME` zstd-compressed (repeatable; verified reads only)", func(v string) error { zstd = append(zstd, v); return nil })
	fs.Func("component", "add component version `KEY=VERSION` to product_info (repeatable)", func(v string) error { components = append(components, v); return nil })
	fs.StringVar(&info.ID, "product-id", "", "product id, e.g. testos (required)")
	fs.StringVar(&info.Version, "product-version", "", "product version (required)")
	fs.StringVar(&info.Name, "product-name", "", "human product name (default empty)")
	fs.StringVar(&info.Architecture, "arch", "", "architecture in uname -m spelling, e.g. x86_64 (required)")
	fs.StringVar(&info.BuildInfo, "build-info", "", "free text about the build (default empty)")
	fs.StringVar(&out, "out", "", "output directory for the OCI layout (required)")
	if err := cliflag.Parse(fs, args, stdout, usage); err != nil {
		return err
	}
	for _, f := range []struct{ name, v string }{
		{"--product-id", info.ID}, {"--product-version", info.Version}, {"--arch", info.Architecture}, {"--out", out},
	} {
		if f.v == "" {
			return fmt.Errorf("%s is required (see --help)", f.name)
		}
	}
	if len(payloads) == 0 {
		return errors.New("at least one --payload NAME=FILE is required (see --help)")
	}
	if len(components) > 0 {
		info.Components = map[string]string{}
	}
	for _, c := range components {
		k, v, ok := strings.Cut(c, "=")
		if !ok || k == "" {
			return fmt.Errorf("--component %q: want KEY=VERSION", c)
		}
		if _, dup := info.Components[k]; dup {
			return fmt.Errorf("--component %q: %q given twice", c, k)
		}
		info.Components[k] = v
	}
	var srcs []osimage.PayloadSource
	for _, p := range payloads {
		name, path, ok := strings.Cut(p, "=")
		if !ok || name == "" || path == "" {
			return fmt.Errorf("--payload %q: want NAME=FILE", p)
		}
		srcs = append(srcs, osimage.PayloadSource{Name: name, Path: path})
	}
	for _, z := range zstd {
		found := false
		for i := range srcs {
			if srcs[i].Name == z {
				srcs[i].Compression = osimage.CompressionZstd
				found = true
			}
		}
		if !found {
			return fmt.Errorf("--zstd %q: no --payload of that name", z)
		}
	}
	placements, err := osimage.WriteReport(out, info, srcs)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	for _, p := range placements {
		how := string(p.Method)
		if how == "" {
			how = "compressed"
		}
		log.Info("payload stored", "name", p.Name, "bytes", p.Size, "stored_bytes", p.Layer.Size, "media_type", p.Layer.MediaType, "how", how)
	}
	l, err := oci.Open(out)
	if err != nil {
		return fmt.Errorf("read back %s: %w", out, err)
	}
	fmt.Fprintln(stdout, l.ManifestDescriptor().Digest)
	return nil
}
