package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/imagebuild/blockdev/blockdevtest"
	"github.com/qcluster/qcluster/imagebuild/osimage"
)

// payloadFiles writes a kernel.efi and a system file and returns their paths.
func payloadFiles(t *testing.T) (kernel, system string) {
	t.Helper()
	dir := t.TempDir()
	kernel, system = filepath.Join(dir, "kernel.efi"), filepath.Join(dir, "system.img")
	if err := os.WriteFile(kernel, bytes.Repeat([]byte("MZ kernel"), 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(system, bytes.Repeat([]byte("system"), 500000), 0o644); err != nil {
		t.Fatal(err)
	}
	return kernel, system
}

func TestRun(t *testing.T) {
	kernel, system := payloadFiles(t)
	out := filepath.Join(t.TempDir(), "image")
	var stdout, stderr bytes.Buffer
	err := run([]string{
		"--payload", "kernel.efi=" + kernel, "--payload", "system=" + system,
		"--product-id", "testos", "--product-version", "0.1.0", "--arch", "x86_64",
		"--product-name", "qcluster test OS", "--component", "kernel=6.1.0-56-cloud-amd64", "--component", "loader=systemd-boot 252",
		"--zstd", "kernel.efi", "--out", out,
	}, &stdout, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout: %sstderr: %s", stdout.String(), stderr.String())
	img, err := osimage.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.RequireOSPayloads(); err != nil {
		t.Error(err)
	}
	if err := img.RequireArchitecture("x86_64"); err != nil {
		t.Error(err)
	}
	cfg := img.Config()
	if cfg.ProductInfo.Name != "qcluster test OS" || cfg.ProductInfo.Components["loader"] != "systemd-boot 252" {
		t.Errorf("product info %+v", cfg.ProductInfo)
	}
	for name, path := range map[string]string{"kernel.efi": kernel, "system": system} {
		want, _ := os.ReadFile(path)
		p, err := img.Payload(name)
		if err != nil {
			t.Fatal(err)
		}
		if got := blockdevtest.Read(t, p); !bytes.Equal(got, want) {
			t.Errorf("payload %s differs from %s", name, path)
		}
	}
	if _, err := img.PayloadUnverified("kernel.efi"); !errors.Is(err, osimage.ErrCompressed) {
		t.Errorf("kernel.efi should be compressed: %v", err)
	}
	if s := strings.TrimSpace(stdout.String()); !strings.HasPrefix(s, "sha256:") || strings.Contains(s, "\n") {
		t.Errorf("stdout %q, want one manifest digest", stdout.String())
	}
}

func TestRunHelp(t *testing.T) {
	var stdout bytes.Buffer
	err := run([]string{"--help"}, &stdout, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help returned %v, want flag.ErrHelp", err)
	}
	for _, s := range []string{"usage: mkoci", "-payload NAME=FILE", "-zstd NAME", "-out"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("usage lacks %q:\n%s", s, stdout.String())
		}
	}
}

// TestRunBadInput: every bad input is a one-line error naming the problem,
// and --out is never created.
func TestRunBadInput(t *testing.T) {
	kernel, system := payloadFiles(t)
	base := []string{"--product-id", "testos", "--product-version", "1", "--arch", "x86_64"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing payload file", []string{"--payload", "kernel.efi=" + kernel, "--payload", "system=" + system + ".missing"}, "no such file"},
		{"payload without =", []string{"--payload", kernel}, "want NAME=FILE"},
		{"no payload", nil, "at least one --payload"},
		{"zstd of unknown payload", []string{"--payload", "system=" + system, "--zstd", "kernel.efi"}, `--zstd "kernel.efi": no --payload`},
		{"duplicate payload", []string{"--payload", "system=" + system, "--payload", "system=" + kernel}, `"system" given twice`},
		{"bad payload name", []string{"--payload", "a/b=" + system}, `payload name "a/b"`},
		{"bad component", []string{"--payload", "system=" + system, "--component", "kernel"}, "want KEY=VERSION"},
		{"unknown flag", []string{"--payload", "system=" + system, "--compress"}, "flag provided but not defined: -compress"},
		{"stray argument", []string{"--payload", "system=" + system, "extra"}, `unexpected argument "extra"`},
		{"payload read error", []string{"--payload", "kernel.efi=" + kernel, "--payload", "system=/proc/self/mem"}, "input/output error"},
		{"payload is a directory", []string{"--payload", "system=" + filepath.Dir(system)}, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			out := filepath.Join(parent, "image")
			args := append(append(append([]string{}, base...), tc.args...), "--out", out)
			if tc.name == "stray argument" { // flags after a positional argument are not parsed
				args = append(append(append([]string{}, base...), "--out", out), tc.args...)
			}
			err := run(args, io.Discard, io.Discard)
			if err == nil {
				t.Fatalf("run %q succeeded", args)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q: want one line mentioning %q", msg, tc.want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("failed run left %v in the output's parent", ents)
			}
		})
	}
	for _, missing := range []string{"--product-id", "--product-version", "--arch", "--out"} {
		t.Run("missing "+missing, func(t *testing.T) {
			parent := t.TempDir()
			args := []string{"--payload", "system=" + system}
			full := append(append([]string{}, base...), "--out", filepath.Join(parent, "image"))
			for i := 0; i < len(full); i += 2 {
				if full[i] != missing {
					args = append(args, full[i], full[i+1])
				}
			}
			err := run(args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), missing+" is required") {
				t.Errorf("without %s: %v", missing, err)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("failed run left %v", ents)
			}
		})
	}
}
