package protogen

import (
	"os"
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
