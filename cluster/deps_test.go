package cluster_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoSwitchInside checks that cluster links the switch's client only:
// the switch itself (gVisor's network stack, the services) runs in its own
// process and stays out of every program that launches clusters.
func TestNoSwitchInside(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the dependencies with")
	}
	out, err := exec.Command(gobin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.Contains(p, "gvisor") || p == "github.com/qcluster/qcluster/nanoswitch" {
			t.Errorf("cluster links %s", p)
		}
	}
}
