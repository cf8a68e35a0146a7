// Package protogen checks, in tests, that committed protobuf code is exactly
// what scripts/genproto.sh makes of its .proto file, so that `go generate`
// stays reproducible byte for byte.
package protogen

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

// CheckGenerated regenerates proto (a file in the test's working directory)
// into a temporary folder and compares NAME.pb.go and NAME_grpc.pb.go with
// the committed files.
func CheckGenerated(t *testing.T, proto string) {
	t.Helper()
	// The .proto and genproto.sh are not runfiles: skipped under Bazel.
	root := needs.Checkout(t)
	needs.Tool(t, "protoc", "protobuf-compiler")
	needs.Short(t, "builds the protoc plugins")
	out := t.TempDir()
	cmd := exec.Command(filepath.Join(root, "scripts/genproto.sh"), proto, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("genproto.sh %s: %v\n%s", proto, err, b)
	}
	base := strings.TrimSuffix(proto, ".proto")
	for _, name := range []string{base + ".pb.go", base + "_grpc.pb.go"} {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			wd, _ := os.Getwd()
			t.Errorf("%s differs from its regeneration: run go generate in %s and commit", name, wd)
		}
	}
}
