package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/gpt"
	"github.com/qcluster/qcluster/imagebuild/osimage"
	"github.com/qcluster/qcluster/internal/needs"
)

// TestMain lets the tests run the real main in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("MKDISK_TEST_MAIN") == "1" {
		os.Args = append([]string{"mkdisk"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const loaderPath = "../../../third_party/cache/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

// fixture writes an OS image for arch with small random payloads.
func fixture(t *testing.T, arch string) (image string) {
	t.Helper()
	dir := t.TempDir()
	var srcs []osimage.PayloadSource
	for i, p := range []struct {
		name string
		size int
	}{{osimage.PayloadKernel, 2<<20 + 5}, {osimage.PayloadSystem, 8 << 20}} {
		b := make([]byte, p.size)
		rand.NewChaCha8([32]byte{byte(i)}).Read(b)
		path := filepath.Join(dir, p.name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, osimage.PayloadSource{Name: p.name, Path: path})
	}
	image = filepath.Join(dir, "image")
	if err := osimage.Write(image, osimage.ProductInfo{ID: "testos", Version: "1", Architecture: arch}, srcs); err != nil {
		t.Fatal(err)
	}
	return image
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &out, &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, s := range []string{"usage: mkdisk", "-image", "-loader", "-size", "-seed", "-unverified", "-esp-file", "-out"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("--help does not mention %q", s)
		}
	}
}

func TestWrite(t *testing.T) {
	needs.File(t, loaderPath, "make fetch")
	image := fixture(t, "x86_64")
	dir := t.TempDir()
	extra := filepath.Join(dir, "params.json")
	os.WriteFile(extra, []byte("{}"), 0o644)
	out := filepath.Join(dir, "node0.raw")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--image", image, "--loader", loaderPath, "--size", "100MiB",
		"--esp-size", "40M", "--system-size", "16MiB", "--seed", "node0", "--unverified",
		"--esp-file", "EFI/qcluster/parameters.json=" + extra, "--out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout:\n%s", stdout.String())
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 5 {
		t.Errorf("%d lines on stdout, want 5 (loader, loader.conf, kernel, extra file, system)", len(lines))
	}
	if !strings.Contains(stdout.String(), "SYSTEM-A\t\t8388608\t") {
		t.Errorf("no SYSTEM-A line on stdout")
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := gpt.Read(f, 100<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(tab.Partitions) != 4 || tab.Partitions[1].Size() != 16<<20 || tab.Partitions[0].Size() != 40<<20 {
		t.Errorf("partitions %+v", tab.Partitions)
	}
}

// Bad input: exit status 1, one line on stderr, nothing at --out.
func TestErrors(t *testing.T) {
	needs.File(t, loaderPath, "make fetch")
	image, arm := fixture(t, "x86_64"), fixture(t, "aarch64")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no image", []string{"--loader", loaderPath}, "--image is required"},
		{"missing image", []string{"--image", "/nonexistent", "--loader", loaderPath}, "/nonexistent"},
		{"missing loader", []string{"--image", image, "--loader", "/nonexistent.efi"}, "--loader: stat /nonexistent.efi"},
		{"wrong arch", []string{"--image", arm, "--loader", loaderPath}, `is for "aarch64", want "x86_64"`},
		{"disk too small", []string{"--image", image, "--loader", loaderPath, "--size", "2GiB"}, "disk size 2 GiB is smaller than the plan's 2.13 GiB"},
		{"system too big", []string{"--image", image, "--loader", loaderPath, "--system-size", "4MiB"}, "system payload is 8 MiB, partition SYSTEM-A is 4 MiB"},
		{"bad size", []string{"--image", image, "--loader", loaderPath, "--size", "3GB"}, `unknown unit "GB"`},
		{"bad esp file", []string{"--image", image, "--loader", loaderPath, "--esp-file", "x"}, `want PATH=FILE`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "disk.raw")
			cmd := exec.Command(os.Args[0], append(c.args, "--out", out)...)
			cmd.Env = append(os.Environ(), "MKDISK_TEST_MAIN=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit: %v, want status 1", err)
			}
			msg := stderr.String()
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "mkdisk: ") || !strings.Contains(msg, c.want) {
				t.Errorf("stderr %q; want one line starting with mkdisk: and containing %q", msg, c.want)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}
