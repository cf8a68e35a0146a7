package swtpm_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qcluster/qcluster/swtpm"
)

// Figures for the package's costs; run with
//
//	go test -run '^$' -bench . -benchtime 10x ./swtpm

// BenchmarkNewCA: creating a cluster's CA (key, certificate, config files).
func BenchmarkNewCA(b *testing.B) {
	needSwtpm(b)
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		if _, err := swtpm.NewCA(context.Background(), filepath.Join(dir, fmt.Sprint(i)), swtpm.CAOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManufactureFirst: the first node of a cluster, CA creation included.
func BenchmarkManufactureFirst(b *testing.B) {
	needSwtpm(b)
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		ca, err := swtpm.NewCA(context.Background(), filepath.Join(dir, fmt.Sprint("ca", i)), swtpm.CAOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ca.Manufacture(context.Background(), filepath.Join(dir, fmt.Sprint("node", i)), swtpm.ManufactureOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManufacture: one more node against an existing CA.
func BenchmarkManufacture(b *testing.B) {
	needSwtpm(b)
	ca := newCA(b)
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		if _, err := ca.Manufacture(context.Background(), filepath.Join(dir, fmt.Sprint(i)), swtpm.ManufactureOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManufactureKept: Manufacture of an already manufactured node (a restart).
func BenchmarkManufactureKept(b *testing.B) {
	needSwtpm(b)
	ca := newCA(b)
	m := manufacture(b, ca, "node")
	for b.Loop() {
		if _, err := ca.Manufacture(context.Background(), m.StateDir, swtpm.ManufactureOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkManufactureParallel3: three nodes manufactured at once; one op is all three.
func BenchmarkManufactureParallel3(b *testing.B) {
	needSwtpm(b)
	ca := newCA(b)
	dir := b.TempDir()
	for i := 0; b.Loop(); i++ {
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for n := range errs {
			wg.Go(func() {
				_, errs[n] = ca.Manufacture(context.Background(), filepath.Join(dir, fmt.Sprint(i, "-", n)), swtpm.ManufactureOptions{})
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkStart: exec of swtpm until its control channel has answered
// CMD_INIT (Start's return); Close is not timed.
func BenchmarkStart(b *testing.B) {
	needSwtpm(b)
	m := manufacture(b, newCA(b), "node")
	sock := filepath.Join(b.TempDir(), "ctrl")
	for b.Loop() {
		tpm, err := swtpm.Start(context.Background(), swtpm.Options{StateDir: m.StateDir, CtrlSocket: sock})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := tpm.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
