package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/control"
	"github.com/qcluster/qcluster/control/api"
)

// detachKey is Ctrl-] (as in telnet and virsh console).
const detachKey = 0x1d

func consoleCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	history := fs.Int("history", 50, "recent console lines to show first")
	return func(ctx context.Context, e *env) error {
		return withNode(ctx, e, func(c *control.Client, st *api.ClusterStatus, i int32) error {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := c.Console(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&api.ConsoleInput{Node: i, HistoryLines: int32(*history)}); err != nil {
				return err
			}
			// A terminal goes raw: keys reach the guest as typed (Ctrl-C
			// included), and the guest's output is shown as it is.
			if f, ok := e.stdin.(*os.File); ok {
				if restore, err := rawTerminal(int(f.Fd())); err == nil {
					defer restore()
				}
			}
			fmt.Fprintf(e.stderr, "Console of %s in %s; Ctrl-] detaches.\r\n", st.Nodes[i].Name, st.Name)
			detached := make(chan struct{})
			go func() {
				buf := make([]byte, 4096)
				for {
					k, err := e.stdin.Read(buf)
					p := buf[:k]
					if j := bytes.IndexByte(p, detachKey); j >= 0 {
						_ = stream.Send(&api.ConsoleInput{Data: append([]byte(nil), p[:j]...)})
						close(detached)
						cancel()
						return
					}
					if k > 0 {
						if stream.Send(&api.ConsoleInput{Data: append([]byte(nil), p...)}) != nil {
							return
						}
					}
					if err != nil {
						return // stdin ended: keep watching until Ctrl-C
					}
				}
			}()
			for {
				out, err := stream.Recv()
				if err != nil {
					select {
					case <-detached:
						fmt.Fprintf(e.stderr, "\r\nDetached from %s; %s keeps running.\r\n", st.Nodes[i].Name, st.Name)
						return nil
					default:
					}
					if ctx.Err() != nil || errors.Is(err, io.EOF) {
						fmt.Fprint(e.stderr, "\r\n")
						return nil
					}
					return err
				}
				if _, err := e.stdout.Write(out.Data); err != nil {
					return err
				}
			}
		})
	}
}

// rawTerminal puts the terminal fd in raw mode (as cfmakeraw does) and
// returns how to restore it.
func rawTerminal(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}

func connectCmd(fs *flag.FlagSet) func(context.Context, *env) error {
	return func(ctx context.Context, e *env) error {
		return withCluster(ctx, e, func(c *control.Client, st *api.ClusterStatus) error {
			i, err := parseHost(e.args[0], st)
			if err != nil {
				return err
			}
			port, err := strconv.Atoi(e.args[1])
			if err != nil || port < 1 || port > 65535 {
				return usagef("port %q: want 1 to 65535", e.args[1])
			}
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			stream, err := c.Connect(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&api.ConnectInput{Node: i, Port: int32(port)}); err != nil {
				return err
			}
			go func() {
				buf := make([]byte, 32<<10)
				for {
					k, err := e.stdin.Read(buf)
					if k > 0 && stream.Send(&api.ConnectInput{Data: append([]byte(nil), buf[:k]...)}) != nil {
						return
					}
					if err != nil {
						_ = stream.CloseSend() // half-close: the node sees our end of stream
						return
					}
				}
			}()
			for {
				out, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if _, err := e.stdout.Write(out.Data); err != nil {
					return err
				}
			}
		})
	}
}

// parseHost reads a node as ssh's %h gives it: node1, 1, the node's FQDN
// or its address.
func parseHost(s string, st *api.ClusterStatus) (int32, error) {
	for _, n := range st.Nodes {
		if s == n.Fqdn || s == n.Address || strings.TrimSuffix(s, ".") == n.Fqdn {
			return n.Index, nil
		}
	}
	return parseNode(s, st)
}
