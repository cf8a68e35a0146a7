package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/qcluster/qcluster/control"
	"github.com/qcluster/qcluster/control/api"
)

// withCluster opens the cluster e names and reads its status (to check
// node arguments against it).
func withCluster(ctx context.Context, e *env, fn func(c *control.Client, st *api.ClusterStatus) error) error {
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	st, err := statusOf(ctx, c)
	if err != nil {
		return err
	}
	return fn(c, st)
}

// withNode is withCluster for the commands whose first argument is a node.
func withNode(ctx context.Context, e *env, fn func(c *control.Client, st *api.ClusterStatus, i int32) error) error {
	return withCluster(ctx, e, func(c *control.Client, st *api.ClusterStatus) error {
		i, err := parseNode(e.args[0], st)
		if err != nil {
			return err
		}
		return fn(c, st, i)
	})
}

func lifecycleCmd(verb string) func(fs *flag.FlagSet) func(context.Context, *env) error {
	steps := map[string]string{"reboot": "Rebooting", "stop": "Stopping", "start": "Starting", "kill": "Killing"}
	return func(fs *flag.FlagSet) func(context.Context, *env) error {
		return func(ctx context.Context, e *env) error {
			return withNode(ctx, e, func(c *control.Client, st *api.ClusterStatus, i int32) error {
				call := map[string]func(context.Context, *api.NodeRequest, ...grpc.CallOption) (*api.NodeResponse, error){
					"reboot": c.Reboot, "stop": c.Stop, "start": c.Start, "kill": c.Kill,
				}[verb]
				ps := newStatus(e.stderr, isTerminal(e.stderr))
				ps.Start(fmt.Sprintf("%s %s of %s", steps[verb], st.Nodes[i].Name, st.Name))
				resp, err := call(ctx, &api.NodeRequest{Node: i})
				ps.End(err == nil)
				if err != nil {
					return err
				}
				if verb == "reboot" || verb == "start" {
					ps.Logf("   %s is %s (ready %.1fs after QEMU started)", resp.Node.Name, resp.Node.State, resp.Node.ReadySeconds)
				}
				return nil
			})
		}
	}
}

func partitionCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		return withNode(ctx, e, func(c *control.Client, st *api.ClusterStatus, a int32) error {
			b, err := parseNode(e.args[1], st)
			if err != nil {
				return err
			}
			if _, err := c.Partition(ctx, &api.PartitionRequest{A: a, B: b}); err != nil {
				return err
			}
			notice(e, "%s and %s of %s are partitioned (cluster heal %s undoes it)", st.Nodes[a].Name, st.Nodes[b].Name, st.Name, st.Name)
			return nil
		})
	}
}

func isolateCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		return withNode(ctx, e, func(c *control.Client, st *api.ClusterStatus, a int32) error {
			if _, err := c.Isolate(ctx, &api.NodeRequest{Node: a}); err != nil {
				return err
			}
			notice(e, "%s of %s is isolated from the other nodes (cluster heal %s undoes it)", st.Nodes[a].Name, st.Name, st.Name)
			return nil
		})
	}
}

func degradeCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	loss := fs.String("loss", "0%", "share of frames dropped, 0% to 100%")
	delay := fs.String("delay", "0s", "delay added to every frame, e.g. 50ms")
	return func(ctx context.Context, e *env) error {
		pct, err := strconv.ParseFloat(strings.TrimSuffix(*loss, "%"), 64)
		if err != nil || pct < 0 || pct > 100 {
			return usagef("--loss %q: want a percentage from 0%% to 100%%, such as 10%%", *loss)
		}
		d, err := time.ParseDuration(*delay)
		if err != nil || d < 0 {
			return usagef("--delay %q: want a duration of 0 or more, such as 50ms", *delay)
		}
		if pct == 0 && d == 0 {
			return usagef("give --loss, --delay or both (cluster heal removes faults)")
		}
		return withNode(ctx, e, func(c *control.Client, st *api.ClusterStatus, a int32) error {
			if _, err := c.Degrade(ctx, &api.DegradeRequest{Node: a, LossPercent: pct, DelayMs: d.Milliseconds()}); err != nil {
				return err
			}
			notice(e, "%s of %s: %g%% loss, %s delay (cluster heal %s undoes it)", st.Nodes[a].Name, st.Name, pct, d, st.Name)
			return nil
		})
	}
}

func healCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		return withCluster(ctx, e, func(c *control.Client, st *api.ClusterStatus) error {
			if _, err := c.Heal(ctx, &api.HealRequest{}); err != nil {
				return err
			}
			notice(e, "every network fault of %s is removed", st.Name)
			return nil
		})
	}
}

// notice prints a finished action as a step line.
func notice(e *env, format string, args ...any) {
	fmt.Fprintf(e.stderr, " ✓ %s\n", fmt.Sprintf(format, args...))
}
