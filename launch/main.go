// Command cluster launches a throw-away cluster of QEMU virtual machines from
// an OS image in OCI form and waits until every node is ready.
//
//	go run ./launch                       # 3 nodes of the default testos image
//	bazel run //launch:cluster -- --nodes 5
//
// It prints one line per step, then a summary of the nodes and how to reach
// them, and keeps the cluster up until Ctrl-C (or, with --exit-when-ready,
// tears it down at once). It is the only part of qcluster that reads flags
// and the environment or writes to the terminal.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/warm"
	"github.com/qcluster/qcluster/imagebuild/blockdev"
	"github.com/qcluster/qcluster/internal/cliflag"
	"github.com/qcluster/qcluster/nanoswitch/switchmain"
	"github.com/qcluster/qcluster/testos/profile"
)

const usage = `Usage: cluster [up] [flags]

Launches a cluster of QEMU VMs (q35, OVMF, virtio; KVM where usable, TCG
where not) from an OS image in OCI form, one fresh disk and one swtpm TPM per
node and a virtual switch between them, and waits until every node is ready.
With --detach it then returns, leaving the cluster running in the background;
other commands (cluster --help lists them) work with it by its --name.

Examples:
  cluster                                   3 nodes of the default image (make image)
  cluster --nodes 1 --memory 1024 --no-tpm  one node, 1 GiB, no TPM
  cluster --exit-when-ready --json out.json launch, write a summary, tear down (for scripts)
  cluster --image ./my-os --ready tcp:22    another OS image, ready when port 22 accepts
  cluster --nodes 3 --snapshot DIR --exit-when-ready
                                            boot, snapshot into DIR once ready, tear down
  cluster --restore DIR                     restore the snapshot in DIR: ready in about a second

Warm clusters: by default a cluster is restored from a template in a cache
(--cache-dir), made on first use by a cold launch and a snapshot, so that
only the first launch for a set of options boots. --cold boots every time.
A restored cluster is a copy of its template: the guests' keys, TPMs and
random state are the template's (testos steps its clock and reseeds).

Ctrl-C (SIGINT) or SIGTERM cancels the launch or, once the cluster is up,
stops it; either way everything is torn down first. A second Ctrl-C kills
at once: the helper processes die with the command, files may stay behind.

Exit status: 0 after --exit-when-ready or --help; 1 when the launch or the
teardown failed; 2 for a bad flag; 130 after SIGINT and 143 after SIGTERM
(128 + the signal's number, as a shell reports a command a signal ended).

Flags:
`

// config is everything the flags say.
type config struct {
	opts          cluster.Options
	readySpec     string
	jsonPath      string
	exitWhenReady bool
	logLevel      string
	snapshotDir   string // --snapshot
	cacheDir      string
	cacheMax      int64
	detach        bool
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	// A mistake gets one line (run prints it), --help the usage.
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	c := &config{}
	o := &c.opts
	var disk, timeout, cacheMax string
	var noTPM bool
	fs.IntVar(&o.Nodes, "nodes", 3, fmt.Sprintf("number of nodes (1–%d)", cluster.MaxNodes))
	fs.IntVar(&o.Node.CPUs, "cpus", 1, fmt.Sprintf("virtual CPUs per node (1–%d)", cluster.MaxCPUs))
	fs.IntVar(&o.Node.MemoryMiB, "memory", 512, fmt.Sprintf("memory per node, MiB (%d–%d)", cluster.MinMemoryMiB, cluster.MaxMemoryMiB))
	fs.StringVar(&disk, "disk", "3GiB", "disk size per node (bytes, or with KiB/MiB/GiB/TiB)")
	fs.BoolVar(&noTPM, "no-tpm", false, "start the nodes without a TPM")
	tpm := fs.Bool("tpm", true, "give every node a swtpm TPM (--tpm=false is --no-tpm)")
	fs.StringVar(&o.Image, "image", "", "OS image: an OCI layout directory (default: out/testos from make image)")
	fs.StringVar(&o.Loader, "loader", "", "EFI loader for the ESP (default: out/loader.efi)")
	fs.StringVar(&o.Accel, "accel", "auto", "accelerator: auto, kvm or tcg")
	fs.StringVar(&o.StateDir, "state-dir", "", "state directory (default: a fresh one under $TMPDIR; must not be in use)")
	fs.BoolVar(&o.KeepState, "keep", false, "keep the state directory after teardown")
	fs.StringVar(&timeout, "timeout", "10m", "how long the launch may take until every node is ready")
	fs.StringVar(&c.readySpec, "ready", "testos", "readiness probe: testos, grpc-health:PORT[:tls], tcp:PORT, console:REGEXP")
	fs.StringVar(&c.jsonPath, "json", "", "write a machine-readable summary to this file")
	fs.BoolVar(&c.exitWhenReady, "exit-when-ready", false, "tear down and exit 0 once every node is ready")
	fs.StringVar(&o.Name, "name", "", "cluster name, by which other commands find it (default: qc and 6 hex digits)")
	fs.BoolVar(&c.detach, "detach", false, "return once every node is ready, leaving the cluster running in the background (cluster down NAME stops it)")
	fs.StringVar(&c.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn, error")
	fs.StringVar(&o.QEMU, "qemu", "", "path of qemu-system-x86_64 (default: found on PATH)")
	fs.StringVar(&o.Swtpm, "swtpm", "", "path of swtpm (default: found on PATH)")
	fs.StringVar(&o.FirmwareCode, "ovmf-code", "", "OVMF code image (default: discovered)")
	fs.StringVar(&o.FirmwareVars, "ovmf-vars", "", "OVMF vars template (default: discovered)")
	fs.StringVar(&c.snapshotDir, "snapshot", "", "boot, then snapshot the ready cluster into this new directory (with --exit-when-ready: then tear down)")
	fs.StringVar(&o.Snapshot, "restore", "", "restore the cluster from this snapshot directory instead of booting it")
	fs.BoolVar(&o.Cold, "cold", false, "boot the cluster instead of restoring it from a cached template")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "template cache (default: $XDG_CACHE_HOME/qcluster/warm)")
	fs.StringVar(&cacheMax, "cache-max", "16GiB", "how much disk the template cache may use; least recently used templates go first")
	if err := cliflag.Parse(fs, args, stderr, usage); err != nil {
		return nil, err
	}
	if c.detach && c.exitWhenReady {
		return nil, errors.New("--detach and --exit-when-ready: give one (a detached cluster runs until cluster down)")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case c.snapshotDir != "" && o.Snapshot != "":
		return nil, errors.New("--snapshot and --restore: choose one (a restored cluster cannot be snapshotted; snapshot its template)")
	case c.snapshotDir != "":
		o.Cold = true // a snapshot needs a cluster that booted
		// Its certificates must outlive the snapshot's reuse.
		o.CertValidity = 365 * 24 * time.Hour
	}
	// `bazel run` starts us in the runfiles tree; paths the user typed are
	// relative to where they typed them.
	if wd := os.Getenv("BUILD_WORKING_DIRECTORY"); wd != "" {
		for _, p := range []*string{&o.Image, &o.Loader, &o.StateDir, &o.QEMU, &o.Swtpm, &o.FirmwareCode, &o.FirmwareVars, &c.jsonPath, &c.snapshotDir, &o.Snapshot, &c.cacheDir} {
			if *p != "" && !filepath.IsAbs(*p) {
				*p = filepath.Join(wd, *p)
			}
		}
	}
	size, err := blockdev.ParseSize(disk)
	if err != nil || size <= 0 {
		return nil, fmt.Errorf("--disk: size %q: want a positive number of bytes, optionally with KiB, MiB, GiB or TiB", disk)
	}
	o.Node.DiskSize = size
	o.Node.NoTPM = noTPM || !*tpm
	if o.Timeout, err = time.ParseDuration(timeout); err != nil || o.Timeout <= 0 {
		return nil, fmt.Errorf("--timeout %q: want a positive duration such as 5m or 90s", timeout)
	}
	if o.Profile, err = parseReady(c.readySpec); err != nil {
		return nil, fmt.Errorf("--ready: %w", err)
	}
	if c.cacheMax, err = blockdev.ParseSize(cacheMax); err != nil || c.cacheMax <= 0 {
		return nil, fmt.Errorf("--cache-max %q: want a positive size such as 16GiB", cacheMax)
	}
	if c.cacheDir == "" {
		if d, err := os.UserCacheDir(); err == nil {
			c.cacheDir = filepath.Join(d, "qcluster", "warm")
		} else {
			o.Cold = true // nowhere to keep templates
		}
	}
	// The cluster's own limits, checked here so that a mistake is a flag's
	// one-line error before anything starts; zero, which the options would
	// replace by a default, is a mistake on the command line too.
	if o.Nodes < 1 || o.Nodes > cluster.MaxNodes {
		return nil, fmt.Errorf("--nodes %d: want 1 to %d", o.Nodes, cluster.MaxNodes)
	}
	if o.Node.CPUs < 1 || o.Node.CPUs > cluster.MaxCPUs {
		return nil, fmt.Errorf("--cpus %d: want 1 to %d", o.Node.CPUs, cluster.MaxCPUs)
	}
	if o.Node.MemoryMiB < cluster.MinMemoryMiB || o.Node.MemoryMiB > cluster.MaxMemoryMiB {
		return nil, fmt.Errorf("--memory %d: want %d to %d (MiB)", o.Node.MemoryMiB, cluster.MinMemoryMiB, cluster.MaxMemoryMiB)
	}
	if o.Snapshot != "" {
		// The snapshot decides these; only values typed must agree with it.
		for name, zero := range map[string]func(){
			"nodes": func() { o.Nodes = 0 }, "cpus": func() { o.Node.CPUs = 0 },
			"memory": func() { o.Node.MemoryMiB = 0 }, "disk": func() { o.Node.DiskSize = 0 },
			"accel": func() { o.Accel = "" },
		} {
			if !set[name] {
				zero()
			}
		}
	}
	return c, nil
}

// parseReady turns --ready into a profile.
func parseReady(spec string) (cluster.Profile, error) {
	kind, arg, _ := strings.Cut(spec, ":")
	port := func(s string) (int, error) {
		p, err := strconv.Atoi(s)
		if err != nil || p < 1 || p > 65535 {
			return 0, fmt.Errorf("%q: want a port from 1 to 65535", s)
		}
		return p, nil
	}
	switch kind {
	case "testos":
		return &profile.Profile{}, nil
	case "grpc-health":
		portStr, tlsOpt, _ := strings.Cut(arg, ":")
		p, err := port(portStr)
		if err != nil {
			return nil, err
		}
		if tlsOpt != "" && tlsOpt != "tls" {
			return nil, fmt.Errorf("%q: want grpc-health:PORT or grpc-health:PORT:tls", spec)
		}
		return cluster.GRPCHealthProfile{Port: p, TLS: tlsOpt == "tls"}, nil
	case "tcp":
		p, err := port(arg)
		if err != nil {
			return nil, err
		}
		return cluster.TCPProfile{Port: p}, nil
	case "console":
		re, err := regexp.Compile(arg)
		if err != nil || arg == "" {
			return nil, fmt.Errorf("console:%q: want a regular expression", arg)
		}
		return cluster.ConsoleProfile{Ready: re}, nil
	}
	return nil, fmt.Errorf("%q: want testos, grpc-health:PORT[:tls], tcp:PORT or console:REGEXP", spec)
}

func main() {
	// The command is its clusters' switch too (run re-executes it so).
	if len(os.Args) > 1 && os.Args[1] == switchmain.Arg {
		os.Exit(switchmain.Main(os.Args[2:]))
	}
	os.Exit(dispatch(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cluster: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.logLevel)); err != nil {
		fmt.Fprintf(stderr, "cluster: --log-level %q: want debug, info, warn or error\n", cfg.logLevel)
		return 2
	}
	bg, _ := stderr.(*detachedChild)
	if cfg.detach && bg == nil {
		return runDetached(args, stderr)
	}
	fancy := false
	if f, ok := stderr.(*os.File); ok {
		fancy = capableTerminal(f)
	}
	if bg != nil {
		fancy = os.Getenv(detachedFancyEnv) != ""
	}
	if err := checkName(cfg.opts.Name); err != nil {
		fmt.Fprintf(stderr, "cluster: %v\n", err)
		return 2
	}
	st := newStatus(stderr, fancy)
	cfg.opts.Logger = slog.New(newNoticeHandler(st, level))
	cfg.opts.Progress = progressPrinter(st)
	if cfg.opts.SwitchCommand, err = switchmain.Command(); err != nil {
		fmt.Fprintf(stderr, "cluster: %v\n", err)
		return 1
	}

	// The first SIGINT or SIGTERM cancels the launch or ends the wait, and
	// teardown follows; a second one exits at once. The helpers die with
	// the command (internal/child), only files may stay behind.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	var interrupted atomic.Int32 // exit status the first signal asks for
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case sig := <-sigs:
			interrupted.Store(int32(signalStatus(sig)))
			st.Logf("Stopping (%s): tearing down; press Ctrl-C again to kill at once.", sig)
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-sigs:
			st.Logf("Killed (%s again) without teardown: the helpers die with the command; its state directory and /tmp/qc-* may stay behind.", sig)
			os.Exit(signalStatus(sig))
		case <-done:
		}
	}()

	switch {
	case cfg.opts.Snapshot != "":
		fmt.Fprintf(stderr, "Restoring cluster from %s ...\n", cfg.opts.Snapshot)
	case cfg.opts.Cold:
		fmt.Fprintf(stderr, "Creating cluster with %d node(s) ...\n", cfg.opts.Nodes)
	default:
		fmt.Fprintf(stderr, "Creating cluster with %d node(s) from a template (--cold boots instead) ...\n", cfg.opts.Nodes)
	}
	start := time.Now()
	cache := &warm.Cache{Dir: cfg.cacheDir, MaxBytes: cfg.cacheMax, Logger: cfg.opts.Logger}
	c, res, err := cache.Launch(ctx, cfg.opts)
	st.End(err == nil)
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "Interrupted: everything started was torn down.")
			return int(interrupted.Load())
		}
		fmt.Fprintf(stderr, "ERROR: %v\n", err)
		var ne *cluster.NodeError
		if errors.As(err, &ne) && len(ne.ConsoleTail) > 0 {
			fmt.Fprintf(stderr, "Last console lines of %s (%s):\n", ne.Node, ne.SerialLog)
			for _, l := range ne.ConsoleTail {
				fmt.Fprintf(stderr, "  | %s\n", l)
			}
		}
		return 1
	}
	took := time.Since(start)
	code := 0
	var snap *snapshotSummary
	if cfg.snapshotDir != "" {
		st.Start("Snapshotting into " + cfg.snapshotDir)
		snapStart := time.Now()
		info, err := c.Snapshot(ctx, cfg.snapshotDir, cluster.SnapshotOptions{Close: cfg.exitWhenReady})
		st.End(err == nil)
		if err != nil {
			fmt.Fprintf(stderr, "ERROR: %v\n", err)
			c.Close()
			return 1
		}
		st.Logf("   snapshot: %s on disk, %s of device state, nodes paused %s", blockdev.FormatSize(info.Bytes), blockdev.FormatSize(info.StateBytes), info.Paused.Round(time.Millisecond))
		snap = &snapshotSummary{Dir: info.Dir, Seconds: time.Since(snapStart).Seconds(), Paused: info.Paused.Seconds(),
			Bytes: info.Bytes, StateBytes: info.StateBytes}
		if cfg.exitWhenReady {
			// Snapshot closed the cluster; its files moved into the snapshot.
			sum := summarize(c, cfg.readySpec, took, res)
			sum.Snapshot = snap
			if cfg.jsonPath != "" {
				if err := writeJSON(cfg.jsonPath, sum); err != nil {
					fmt.Fprintf(stderr, "ERROR: %v\n", err)
					return 1
				}
			}
			return 0
		}
	}
	sum := summarize(c, cfg.readySpec, took, res)
	sum.Snapshot = snap
	printSummary(stderr, sum)
	ctl, err := startControl(c, cfg.readySpec, start, took, cfg.opts.Logger)
	if err != nil {
		fmt.Fprintf(stderr, "ERROR: control API: %v\n", err)
		c.Close()
		return 1
	}
	defer ctl.Close()
	if cfg.jsonPath != "" {
		if err := writeJSON(cfg.jsonPath, sum); err != nil {
			fmt.Fprintf(stderr, "ERROR: %v\n", err)
			code = 1
		}
	}
	if code == 0 && !cfg.exitWhenReady {
		if bg != nil {
			fmt.Fprintf(stderr, "Running in the background (pid %d); %s down %s stops it.\n", os.Getpid(), self(), c.Name)
			bg.detach(c.LogDir)
		} else {
			fmt.Fprintf(stderr, "Press Ctrl-C to stop the cluster (or run %s down %s).\n", self(), c.Name)
		}
		select {
		case <-ctx.Done():
			code = int(interrupted.Load())
		case <-ctl.Down():
		}
	}
	ctl.Close() // from here on, no command finds the cluster
	t := time.Now()
	st.Start("Tearing down")
	err = c.Close()
	st.End(err == nil)
	if err != nil {
		// Close joins one error per failed undo step: one line.
		fmt.Fprintf(stderr, "ERROR: teardown: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return 1
	}
	cfg.opts.Logger.Debug("teardown", "took", time.Since(t))
	return code
}

// signalStatus is the exit status after sig: 128 + its number, as a shell
// reports a command that sig ended.
func signalStatus(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return 128 + int(s)
	}
	return 1
}

// lineWriter sends log lines through the status printer so they never
// interleave with a spinner frame.
type lineWriter struct{ st *status }

func (w lineWriter) Write(p []byte) (int, error) {
	w.st.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// progressPrinter turns cluster events into step lines.
func progressPrinter(st *status) func(cluster.Event) {
	ready := 0
	return func(e cluster.Event) {
		switch e.Kind {
		case cluster.StepStarted:
			ready = 0
			st.Start(e.Step)
		case cluster.StepDone:
			st.End(e.Err == nil)
		case cluster.NodeReady:
			ready++
			st.Update(fmt.Sprintf("%s (%d/%d ready)", e.Step, ready, e.Nodes))
			st.Logf("   %s ready after %s", e.Node, e.Elapsed.Round(10*time.Millisecond))
		}
	}
}
