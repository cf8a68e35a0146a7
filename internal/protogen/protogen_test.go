// Package protogen holds tests of the committed protobuf code: every .proto
// file's Go code is exactly what scripts/genproto.sh makes of it, so that
// `go generate` stays reproducible byte for byte, and genproto.sh's plugin
// stays at go.mod's protobuf version.
package protogen

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qcluster/qcluster/internal/needs"
)

// TestPluginVersionsMatchGoMod keeps genproto.sh's protoc-gen-go equal to
// the protobuf runtime go.mod builds the generated code with. (The gRPC
// plugin is pinned on its own; its code says which gRPC runtime it needs,
// and the build checks that.)
func TestPluginVersionsMatchGoMod(t *testing.T) {
	root := needs.Checkout(t)
	script, err := os.ReadFile(filepath.Join(root, "scripts/genproto.sh"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	const pkg, module = "google.golang.org/protobuf/cmd/protoc-gen-go", "google.golang.org/protobuf"
	m := regexp.MustCompile(regexp.QuoteMeta(pkg) + `@(v[^\s"]+)`).FindSubmatch(script)
	if m == nil {
		t.Fatalf("genproto.sh pins no version of %s", pkg)
	}
	want := "\t" + module + " " + string(m[1])
	if !strings.Contains(string(gomod), want+"\n") && !strings.Contains(string(gomod), want+" ") {
		t.Errorf("genproto.sh pins %s@%s, go.mod has another version of %s", pkg, m[1], module)
	}
}

// TestGenerated regenerates each .proto file of the checkout into a
// temporary folder and compares NAME.pb.go and NAME_grpc.pb.go with the
// committed files.
func TestGenerated(t *testing.T) {
	// The .proto files and genproto.sh are not runfiles: skipped under Bazel.
	root := needs.Checkout(t)
	needs.Tool(t, "protoc", "protobuf-compiler")
	needs.Short(t, "builds the protoc plugins")
	var protos []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "third_party" || d.Name() == "out"):
			return filepath.SkipDir
		case strings.HasSuffix(path, ".proto"):
			protos = append(protos, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(protos) == 0 {
		t.Fatalf("no .proto files below %s", root)
	}
	for _, proto := range protos {
		dir, rel := filepath.Split(proto)
		t.Run(strings.TrimPrefix(proto, root+"/"), func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command(filepath.Join(root, "scripts/genproto.sh"), rel, out)
			cmd.Dir = dir
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("genproto.sh %s: %v\n%s", rel, err, b)
			}
			base := strings.TrimSuffix(rel, ".proto")
			for _, name := range []string{base + ".pb.go", base + "_grpc.pb.go"} {
				want, err := os.ReadFile(filepath.Join(dir, name))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(out, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s differs from its regeneration: run go generate in %s and commit", name, dir)
				}
			}
		})
	}
}
