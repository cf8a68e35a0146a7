package api

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

// TestGenerated regenerates the Go code into a temporary folder and compares
// it byte for byte with the committed files.
func TestGenerated(t *testing.T) {
	needs.Tool(t, "protoc", "protobuf-compiler")
	needs.Short(t, "builds the protoc plugins")
	out := t.TempDir()
	cmd := exec.Command("./generate.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh %s: %v\n%s", out, err, b)
	}
	for _, name := range []string{"nanoswitch.pb.go", "nanoswitch_grpc.pb.go"} {
		want, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from its regeneration: run go generate ./nanoswitch/api and commit", name)
		}
	}
}

// TestPluginVersionsMatchGoMod keeps generate.sh's protoc-gen-go equal to
// the protobuf runtime go.mod builds the generated code with. (The gRPC
// plugin is pinned on its own; its code says which gRPC runtime it needs,
// and the build checks that.)
func TestPluginVersionsMatchGoMod(t *testing.T) {
	script, err := os.ReadFile("generate.sh")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ pkg, module string }{
		{"google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/protobuf"},
	} {
		m := regexp.MustCompile(regexp.QuoteMeta(c.pkg) + `@(v[^\s"]+)`).FindSubmatch(script)
		if m == nil {
			t.Fatalf("generate.sh pins no version of %s", c.pkg)
		}
		want := "\t" + c.module + " " + string(m[1])
		if !strings.Contains(string(gomod), want+"\n") && !strings.Contains(string(gomod), want+" ") {
			t.Errorf("generate.sh pins %s@%s, go.mod has another version of %s", c.pkg, m[1], c.module)
		}
	}
}
