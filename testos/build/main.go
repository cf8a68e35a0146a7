// Command build builds qcluster's default node OS (testos) into an OS image:
//
//	go run ./testos/build --out out
//
// (or with --cache DIR --agent FILE --init FILE, as Bazel's os_image rule runs it)
// writes out/testos (the OCI layout: payloads "kernel.efi", the UKI, and
// "system", the EROFS system file system with its dm-verity tree appended)
// and out/loader.efi (systemd-boot). Its inputs are stage 1 (testos/init, the
// initramfs's /init) and the agent (testos/agent, in the system partition),
// built here with the host's go command (CGO_ENABLED=0), and the Debian artifacts that
// third_party/fetch.sh unpacked into third_party/cache. When no input changed
// since the last build (out/testos.stamp holds their hash) it does nothing.
//
// Limits: x86-64 guests only; the kernel's modules must be uncompressed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
)

func main() {
	var o options
	flag.StringVar(&o.out, "out", "out", "output directory: the image goes to OUT/testos, the loader to OUT/loader.efi")
	flag.StringVar(&o.cache, "cache", "", "third_party/fetch.sh's cache (default: third_party/cache in the repository)")
	flag.StringVar(&o.agent, "agent", "", "a prebuilt agent (linux/amd64, static) instead of building ./testos/agent with the go command")
	flag.StringVar(&o.init, "init", "", "a prebuilt stage 1 (linux/amd64, static) instead of building ./testos/init with the go command")
	flag.BoolVar(&o.force, "force", false, "rebuild even when the inputs are unchanged")
	flag.BoolVar(&o.verbose, "v", false, "log every step")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "build: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	level := slog.LevelInfo
	if o.verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := build(ctx, log, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n", err)
		os.Exit(1)
	}
	if res.upToDate {
		fmt.Fprintf(os.Stderr, "build: %s is up to date (inputs %s)\n", res.image, res.inputs[:16])
		return
	}
	fmt.Fprintf(os.Stderr, "build: wrote %s (UKI %d bytes, initramfs %d bytes, system %d bytes) and %s in %v\n",
		res.image, res.ukiSize, res.initrdSize, res.systemSize, res.loader, res.took.Round(1e6))
}
