package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	grpcstatus "google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/control"
	"github.com/qcluster/qcluster/control/api"
)

// Where output goes, one rule for every subcommand: stdout carries a
// command's answer and nothing else (the tables of ls and status, their
// --json, a console's or connection's bytes, logs with -o -); steps,
// notices, the launch summary and errors go to stderr. So `cluster ls
// --json | jq` and `cluster up 2>log` both do what they say.

// subcommand is one verb of the cluster command.
type subcommand struct {
	name     string
	args     string // positional arguments, for the usage line
	summary  string
	example  string
	nodeArgs int // positional arguments after the optional NAME
	flags    func(fs *flag.FlagSet) func(ctx context.Context, e *env) error
}

// env is what a subcommand runs with.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	reg            control.Registry
	name           string   // NAME, "" if left out
	args           []string // the positional arguments after NAME
}

var subcommands []subcommand

func init() {
	subcommands = []subcommand{
		{name: "up", args: "[flags]", summary: "launch a cluster (as a bare `cluster` does); --detach returns once it is ready",
			example: "cluster up --nodes 3 --detach"},
		{name: "ls", summary: "list the running clusters: name, nodes, states, age, state directory",
			example: "cluster ls --json", flags: lsCmd},
		{name: "status", args: "[NAME]", summary: "a running cluster's summary: nodes, addresses, how to reach them",
			example: "cluster status dev --json", flags: statusCmd},
		{name: "down", args: "[NAME] | --all", summary: "tear a cluster down (foreground or detached); returns once it is gone",
			example: "cluster down dev", flags: downCmd},
		{name: "reboot", args: "[NAME] NODE", summary: "reboot a node and wait until it is ready again",
			example: "cluster reboot dev node1", nodeArgs: 1, flags: lifecycleCmd("reboot")},
		{name: "stop", args: "[NAME] NODE", summary: "shut a node down (through its OS, else the power button)",
			example: "cluster stop dev 2", nodeArgs: 1, flags: lifecycleCmd("stop")},
		{name: "start", args: "[NAME] NODE", summary: "start a stopped node and wait until it is ready",
			example: "cluster start dev node2", nodeArgs: 1, flags: lifecycleCmd("start")},
		{name: "kill", args: "[NAME] NODE", summary: "stop a node at once, like pulling the power cord",
			example: "cluster kill dev node0", nodeArgs: 1, flags: lifecycleCmd("kill")},
		{name: "partition", args: "[NAME] A B", summary: "stop all traffic between nodes A and B until heal",
			example: "cluster partition dev node0 node1", nodeArgs: 2, flags: partitionCmd},
		{name: "isolate", args: "[NAME] A", summary: "cut node A off from every other node until heal (the host still reaches it)",
			example: "cluster isolate dev node2", nodeArgs: 1, flags: isolateCmd},
		{name: "degrade", args: "[NAME] A --loss PERCENT --delay DURATION", summary: "make node A's link lossy and slow until heal",
			example: "cluster degrade dev node1 --loss 10% --delay 50ms", nodeArgs: 1, flags: degradeCmd},
		{name: "heal", args: "[NAME]", summary: "remove every network fault",
			example: "cluster heal dev", flags: healCmd},
		{name: "console", args: "[NAME] NODE", summary: "attach to a node's serial console (Ctrl-] detaches)",
			example: "cluster console dev node0", nodeArgs: 1, flags: consoleCmd},
		{name: "connect", args: "[NAME] NODE PORT", summary: "connect stdin/stdout to a TCP port of a node (for ssh's ProxyCommand)",
			example: "ssh -o ProxyCommand='cluster connect dev %h %p' root@node0", nodeArgs: 2, flags: connectCmd},
		{name: "logs", args: "[NAME] [-o FILE.tar.gz]", summary: "every node's console log and QEMU command line, the switch's log, as a .tar.gz",
			example: "cluster logs dev -o dev-logs.tar.gz", flags: logsCmd},
		{name: "snapshot", args: "[NAME] DIR", summary: "freeze a ready cluster booted with up --cold (not restored) into a new snapshot directory; it runs on",
			example: "cluster up --name dev --cold --detach && cluster snapshot dev ./warm", nodeArgs: 1, flags: snapshotCmd},
	}
}

const topUsage = `Usage: cluster [COMMAND] [ARGS]

Launches throw-away clusters of QEMU VMs and works with the running ones from
any terminal. Without a command, cluster launches (as cluster up does).
NAME may be left out when exactly one cluster is running; NODE is node1 or 1.

Commands:
`

// dispatch runs a subcommand, or `up` for flags or nothing.
func dispatch(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if bg := detachedOutput(); bg != nil {
		stdout, stderr = bg, bg
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") && args[0] != "-h" && args[0] != "--help" && args[0] != "-help" {
		return run(args, stdout, stderr)
	}
	if a := args[0]; a == "-h" || a == "--help" || a == "-help" || a == "help" {
		printTopUsage(stderr)
		return 0
	}
	if args[0] == "up" {
		return run(args[1:], stdout, stderr)
	}
	for _, sc := range subcommands {
		if sc.name == args[0] {
			return runSubcommand(sc, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "cluster: unknown command %q (see cluster --help)\n", args[0])
	return 2
}

func printTopUsage(w io.Writer) {
	fmt.Fprint(w, topUsage)
	for _, sc := range subcommands {
		fmt.Fprintf(w, "  %-10s %s\n", sc.name, sc.summary)
	}
	fmt.Fprint(w, "\nExamples:\n")
	for _, sc := range subcommands {
		fmt.Fprintf(w, "  %s\n", sc.example)
	}
	fmt.Fprint(w, "\ncluster COMMAND --help describes a command; cluster up --help the launch flags.\n")
}

// runSubcommand parses a subcommand's flags (before, between or after its
// arguments) and runs it. Exit status: 0 done, 1 failed, 2 bad usage.
func runSubcommand(sc subcommand, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(sc.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	fn := sc.flags(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprintf(stderr, "Usage: cluster %s %s\n\n%s.\n\nExample:\n  %s\n", sc.name, sc.args, capitalize(sc.summary), sc.example)
				if hasFlags(fs) {
					fmt.Fprint(stderr, "\nFlags:\n")
					fs.SetOutput(stderr)
					fs.PrintDefaults()
				}
				return 0
			}
			fmt.Fprintf(stderr, "cluster %s: %v (see cluster %s --help)\n", sc.name, err, sc.name)
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, reg: control.Registry{Dir: registryDir()}}
	switch {
	case sc.name == "logs" || sc.name == "status" || sc.name == "heal" || sc.name == "down":
		if len(pos) > 1 {
			fmt.Fprintf(stderr, "cluster %s: unexpected argument %q (usage: cluster %s %s)\n", sc.name, pos[1], sc.name, sc.args)
			return 2
		}
		if len(pos) == 1 {
			e.name = pos[0]
		}
	case sc.name == "ls":
		if len(pos) > 0 {
			fmt.Fprintf(stderr, "cluster ls: unexpected argument %q (it lists every cluster)\n", pos[0])
			return 2
		}
	default:
		switch len(pos) {
		case sc.nodeArgs:
			e.args = pos
		case sc.nodeArgs + 1:
			e.name, e.args = pos[0], pos[1:]
		default:
			fmt.Fprintf(stderr, "cluster %s: want %s, got %d argument(s) (see cluster %s --help)\n", sc.name, sc.args, len(pos), sc.name)
			return 2
		}
	}
	// Ctrl-C ends a subcommand's call; the cluster is not touched.
	ctx, stop := signalContext()
	defer stop()
	if err := fn(ctx, e); err != nil {
		var u usageError
		if errors.As(err, &u) {
			fmt.Fprintf(stderr, "cluster %s: %v\n", sc.name, err)
			return 2
		}
		fmt.Fprintf(stderr, "cluster %s: %s\n", sc.name, oneLine(err))
		return 1
	}
	return 0
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// oneLine is an error's message on one line, a gRPC status as its message.
func oneLine(err error) string {
	msg := err.Error()
	if s, ok := grpcstatus.FromError(err); ok {
		msg = s.Message()
	}
	return strings.ReplaceAll(strings.TrimSpace(msg), "\n", " | ")
}

// registryDir is where running clusters are registered:
// $XDG_RUNTIME_DIR/qcluster, else a per-user directory under /tmp.
func registryDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "qcluster")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("qcluster-%d", os.Getuid()))
}

// open finds the cluster e names (or the only one) and connects to it.
func (e *env) open() (*control.Client, error) {
	ent, err := e.reg.Lookup(e.name)
	if err != nil {
		return nil, err
	}
	return control.Dial(ent)
}

// statusOf calls Status with a bound: a launcher that stopped answering is
// an error, not a hang.
func statusOf(ctx context.Context, c *control.Client) (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := c.Status(ctx, &api.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s (pid %d) does not answer: %s", c.Entry.Name, c.Entry.PID, oneLine(err))
	}
	return st, nil
}

// parseNode reads NODE ("node1" or "1") against the cluster's nodes.
func parseNode(s string, st *api.ClusterStatus) (int32, error) {
	num := strings.TrimPrefix(s, "node")
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 || i >= len(st.Nodes) || num != strconv.Itoa(i) {
		return 0, usagef("no node %q in cluster %s: it has %s", s, st.Name, control.NodeRange(len(st.Nodes)))
	}
	return int32(i), nil
}

func snapshotCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		dir, err := filepath.Abs(e.args[0])
		if wd := os.Getenv("BUILD_WORKING_DIRECTORY"); wd != "" && !filepath.IsAbs(e.args[0]) {
			dir = filepath.Join(wd, e.args[0])
		}
		if err != nil {
			return err
		}
		return withCluster(ctx, e, func(c *control.Client, st *api.ClusterStatus) error {
			ps := newStatus(e.stderr, isTerminal(e.stderr))
			ps.Start(fmt.Sprintf("Snapshotting %s into %s", st.Name, dir))
			r, err := c.Snapshot(ctx, &api.SnapshotRequest{Dir: dir})
			ps.End(err == nil)
			if err != nil {
				return err
			}
			ps.Logf("   %d MiB on disk, nodes paused %.2fs; restore with: %s up --restore %s", r.Bytes>>20, r.PausedSeconds, self(), r.Dir)
			return nil
		})
	}
}
