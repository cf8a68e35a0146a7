package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/qcluster/qcluster/control"
	"github.com/qcluster/qcluster/control/api"
)

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// lsEntry is one line of ls, and one object of ls --json.
type lsEntry struct {
	Name       string      `json:"name"`
	PID        int         `json:"pid"`
	Nodes      []nodeState `json:"nodes"`
	Started    time.Time   `json:"started"`
	AgeSeconds float64     `json:"age_seconds"`
	StateDir   string      `json:"state_dir"`
	Error      string      `json:"error,omitempty"`
}

type nodeState struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

func lsCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	asJSON := fs.Bool("json", false, "print a JSON array instead of a table")
	return func(ctx context.Context, e *env) error {
		all, err := e.reg.List()
		if err != nil {
			return err
		}
		out := []lsEntry{}
		for _, ent := range all {
			l := lsEntry{Name: ent.Name, PID: ent.PID, Started: ent.Started, AgeSeconds: time.Since(ent.Started).Seconds(), StateDir: ent.StateDir}
			c, err := control.Dial(ent)
			if err == nil {
				var st *api.ClusterStatus
				if st, err = statusOf(ctx, c); err == nil {
					for _, n := range st.Nodes {
						l.Nodes = append(l.Nodes, nodeState{n.Name, n.State})
					}
				}
				c.Close()
			}
			if err != nil {
				l.Error = oneLine(err)
			}
			out = append(out, l)
		}
		if *asJSON {
			return printJSON(e, out)
		}
		if len(out) == 0 {
			fmt.Fprintln(e.stderr, "No cluster is running (start one with: cluster up --detach).")
			return nil
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tNODES\tSTATES\tAGE\tSTATE DIR")
		for _, l := range out {
			states := l.Error
			if states == "" {
				states = countStates(l.Nodes)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", l.Name, len(l.Nodes), states, age(time.Since(l.Started)), l.StateDir)
		}
		return tw.Flush()
	}
}

// countStates is "3 ready" or "2 ready, 1 stopped".
func countStates(nodes []nodeState) string {
	counts := map[string]int{}
	var order []string
	for _, n := range nodes {
		if counts[n.State] == 0 {
			order = append(order, n.State)
		}
		counts[n.State]++
	}
	slices.Sort(order)
	var parts []string
	for _, s := range order {
		parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
	}
	return strings.Join(parts, ", ")
}

// age is a duration as ls shows it: 45s, 12m, 3h5m, 2d4h.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

func printJSON(e *env, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = e.stdout.Write(append(b, '\n'))
	return err
}

func statusCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	asJSON := fs.Bool("json", false, "print the summary as JSON (what up --json writes)")
	return func(ctx context.Context, e *env) error {
		return withCluster(ctx, e, func(_ *control.Client, st *api.ClusterStatus) error {
			sum := summaryOf(st)
			if *asJSON {
				return printJSON(e, sum)
			}
			printStatus(e.stdout, sum)
			return nil
		})
	}
}

func downCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	all := fs.Bool("all", false, "tear down every running cluster")
	return func(ctx context.Context, e *env) error {
		var targets []control.Entry
		switch {
		case *all && e.name != "":
			return usagef("name a cluster or give --all, not both")
		case *all:
			var err error
			if targets, err = e.reg.List(); err != nil {
				return err
			}
		default:
			ent, err := e.reg.Lookup(e.name)
			if err != nil {
				return err
			}
			targets = []control.Entry{ent}
		}
		st := newStatus(e.stderr, isTerminal(e.stderr))
		for _, ent := range targets {
			st.Start(fmt.Sprintf("Tearing down %s", ent.Name))
			err := down(ctx, ent)
			st.End(err == nil)
			if err != nil {
				return fmt.Errorf("%s: %w", ent.Name, err)
			}
		}
		return nil
	}
}

// down asks a launcher to tear its cluster down and waits until its
// process has exited (teardown done).
func down(ctx context.Context, ent control.Entry) error {
	c, err := control.Dial(ent)
	if err != nil {
		return err
	}
	defer c.Close()
	call, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = c.Down(call, &api.DownRequest{})
	cancel()
	if err != nil && control.ProcessAlive(ent.PID) {
		return fmt.Errorf("ask pid %d to tear down: %s", ent.PID, oneLine(err))
	}
	// The launcher exits once everything is gone; it is not our child, so
	// its end is watched by polling.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for control.ProcessAlive(ent.PID) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while pid %d tears down (it goes on)", ent.PID)
		case <-tick.C:
		}
	}
	return nil
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && capableTerminal(f)
}
