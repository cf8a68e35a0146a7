package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/control/api"
)

func TestParseNode(t *testing.T) {
	st := &api.ClusterStatus{Name: "dev", Nodes: []*api.NodeStatus{{Index: 0, Name: "node0", Fqdn: "node0.dev.qcluster.test", Address: "10.42.0.10"}, {Index: 1, Name: "node1"}, {Index: 2, Name: "node2"}}}
	for in, want := range map[string]int32{"node1": 1, "1": 1, "0": 0, "node2": 2} {
		if got, err := parseNode(in, st); err != nil || got != want {
			t.Errorf("parseNode(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"node3", "3", "-1", "node", "01", "node01", "n1", ""} {
		_, err := parseNode(in, st)
		if err == nil || !strings.Contains(err.Error(), "node0 to node2") || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseNode(%q): %v, want a one-line error naming node0 to node2", in, err)
		}
	}
	for in, want := range map[string]int32{"node0.dev.qcluster.test": 0, "node0.dev.qcluster.test.": 0, "10.42.0.10": 0, "node2": 2} {
		if got, err := parseHost(in, st); err != nil || got != want {
			t.Errorf("parseHost(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

// TestExampleLines: the summary's example commands name the port the
// readiness probe knows the nodes serve, never a fixed 7443.
func TestExampleLines(t *testing.T) {
	s := summary{Name: "dev", EnvFile: "/s/env", Nodes: []nodeSummary{{Name: "node0", Address: "10.42.0.10"}}}
	for ready, want := range map[string]string{
		"testos":              "10.42.0.10:7443 list",
		"grpc-health:50051":   "grpcurl -plaintext 10.42.0.10:50051 grpc.health.v1.Health/Check",
		"grpc-health:443:tls": "grpcurl -insecure 10.42.0.10:443",
		"tcp:22":              "ssh -o ProxyCommand='cluster connect dev %h %p' node0",
		"tcp:8080":            "cluster connect dev node0 8080",
		"console:login":       "cluster console dev node0",
	} {
		s.Ready = ready
		lines := strings.Join(exampleLines(s, "cluster"), "\n")
		if !strings.Contains(lines, want) || !strings.HasPrefix(lines, "source /s/env") {
			t.Errorf("--ready %s:\n%s\nwant a line with %q", ready, lines, want)
		}
		if ready != "testos" && strings.Contains(lines, "7443") {
			t.Errorf("--ready %s prints port 7443:\n%s", ready, lines)
		}
	}
}

// TestSubcommandErrors: mistakes and missing clusters are one line on
// stderr with exit status 2 or 1, and every subcommand has --help with an
// example.
func TestSubcommandErrors(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"status", "nope"}, 1, `no such cluster "nope" (none is running)`},
		{[]string{"reboot"}, 2, "want [NAME] NODE"},
		{[]string{"reboot", "a", "b", "c"}, 2, "want [NAME] NODE"},
		{[]string{"reboot", "node1"}, 1, "no cluster is running"},
		{[]string{"degrade", "node1", "--loss", "200%"}, 2, "--loss"},
		{[]string{"down", "--all", "x"}, 2, "not both"},
		{[]string{"ls", "x"}, 2, "unexpected argument"},
	} {
		var out, errb bytes.Buffer
		code := dispatch(c.args, strings.NewReader(""), &out, &errb)
		msg := errb.String()
		if code != c.code || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 1 || out.Len() != 0 {
			t.Errorf("cluster %s: exit %d, stderr %q, stdout %q; want %d and one line with %q", strings.Join(c.args, " "), code, msg, out.String(), c.code, c.want)
		}
	}
	for _, sc := range subcommands {
		var errb bytes.Buffer
		args := []string{sc.name, "--help"}
		if code := dispatch(args, strings.NewReader(""), &bytes.Buffer{}, &errb); code != 0 || !strings.Contains(errb.String(), "Example:") && sc.name != "up" {
			t.Errorf("cluster %s --help: exit %d\n%s", sc.name, code, errb.String())
		}
	}
	var out bytes.Buffer
	if code := dispatch([]string{"ls", "--json"}, strings.NewReader(""), &out, &bytes.Buffer{}); code != 0 || strings.TrimSpace(out.String()) != "[]" {
		t.Errorf("ls --json with nothing running: %d %q", code, out.String())
	}
}
