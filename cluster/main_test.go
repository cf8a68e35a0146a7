package cluster_test

import (
	"testing"

	"github.com/qcluster/qcluster/cluster/clustertest"
)

// TestMain lets the test binary serve as the clusters' switch.
func TestMain(m *testing.M) { clustertest.Main(m) }
