package api

import (
	"testing"

	"github.com/qcluster/qcluster/internal/protogen"
)

// TestGenerated checks that the committed Go code is what go generate makes.
func TestGenerated(t *testing.T) { protogen.CheckGenerated(t, "control.proto") }
