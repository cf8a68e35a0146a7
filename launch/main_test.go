package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/testos/profile"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"3GiB": 3 << 30, "512MiB": 512 << 20, "4096": 4096, "64KiB": 64 << 10, "2G": 2 << 30} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1GiB", "3TB", "GiB", "1.5GiB", "99999999999GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"3GiB", "1", "12MiB", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseSize(s); err == nil && n <= 0 {
			t.Fatalf("parseSize(%q) = %d without error", s, n)
		}
	})
}

func TestParseReady(t *testing.T) {
	for spec, want := range map[string]any{
		"testos":            &profile.Profile{},
		"tcp:22":            cluster.TCPProfile{Port: 22},
		"grpc-health:50051": cluster.GRPCHealthProfile{Port: 50051},
		"grpc-health:1:tls": cluster.GRPCHealthProfile{Port: 1, TLS: true},
	} {
		p, err := parseReady(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		if gotT, wantT := typeName(p), typeName(want); gotT != wantT {
			t.Errorf("%s: %s, want %s", spec, gotT, wantT)
		}
	}
	if p, err := parseReady("console:ready$"); err != nil || p.(cluster.ConsoleProfile).Ready.String() != "ready$" {
		t.Errorf("console: %v %v", p, err)
	}
	for _, bad := range []string{"", "tcp", "tcp:0", "tcp:70000", "grpc-health:x", "grpc-health:1:mtls", "console:", "console:(", "http:80"} {
		if _, err := parseReady(bad); err == nil {
			t.Errorf("parseReady(%q) accepted", bad)
		}
	}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// TestBadFlags runs the command's main path on bad flags: each is one line
// on stderr and exit status 2, before anything is started.
func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nodes", "0"}, {"--nodes", "-3"}, {"--memory", "0"}, {"--cpus", "0"}, {"--disk", "lots"},
		{"--timeout", "soon"}, {"--timeout", "-1s"}, {"--ready", "http:80"}, {"--log-level", "loud"}, {"extra"},
	} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, errb.String())
		}
		if lines := strings.Count(strings.TrimRight(errb.String(), "\n"), "\n"); lines != 0 || !strings.HasPrefix(errb.String(), "cluster: ") {
			t.Errorf("%v: want one line starting with 'cluster: ', got %q", args, errb.String())
		}
	}
}
