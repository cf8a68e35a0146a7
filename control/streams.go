package control

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/control/api"
	"github.com/qcluster/qcluster/qemu"
)

// defaultHistory is how many console lines a viewer gets first.
const defaultHistory = 50

// opening receives a stream's first message, which names the node the
// stream is about.
func opening[M interface{ GetNode() int32 }](s *Server, recv func() (M, error)) (M, *cluster.Node, error) {
	first, err := recv()
	if err != nil {
		return first, nil, err
	}
	n, err := s.node(first.GetNode())
	return first, n, err
}

// Console relays a node's serial console both ways, following the node
// across reboots: each new QEMU's console is subscribed to as it appears.
func (s *Server) Console(stream api.Control_ConsoleServer) error {
	first, n, err := opening(s, stream.Recv)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	write := func(p []byte) {
		if vm := n.VM(); vm != nil && len(p) > 0 {
			_, _ = vm.Console().Write(p)
		}
	}
	write(first.Data)
	go func() {
		defer cancel() // the viewer detached
		for {
			in, err := stream.Recv()
			if err != nil {
				return
			}
			write(in.Data)
		}
	}()
	history := int(first.HistoryLines)
	if history <= 0 {
		history = defaultHistory
	}
	var last *qemu.VM
	for {
		vm := n.VM()
		if vm == nil || vm == last {
			// Stopped, or the same QEMU that ended: look again shortly.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if last != nil {
			history = 0 // a fresh QEMU: everything it printed so far
		}
		last = vm
		sub := vm.Console().Subscribe(history)
		var b strings.Builder
		for _, l := range sub.History {
			b.WriteString(l + "\r\n")
		}
		if err := stream.Send(&api.ConsoleOutput{Data: []byte(b.String())}); err != nil {
			sub.Cancel()
			return err
		}
	relay:
		for {
			select {
			case p, ok := <-sub.Output:
				if !ok {
					break relay
				}
				if err := stream.Send(&api.ConsoleOutput{Data: p}); err != nil {
					sub.Cancel()
					return err
				}
			case <-ctx.Done():
				sub.Cancel()
				return nil
			}
		}
		msg := fmt.Sprintf("\r\n[qcluster: %s's QEMU ended (state %s); waiting for it to start again]\r\n", n.Name, n.State())
		if err := stream.Send(&api.ConsoleOutput{Data: []byte(msg)}); err != nil {
			return err
		}
	}
}

// Connect splices the stream to a TCP connection to a node's port.
func (s *Server) Connect(stream api.Control_ConnectServer) error {
	first, n, err := opening(s, stream.Recv)
	if err != nil {
		return err
	}
	if first.Port < 1 || first.Port > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d: want 1 to 65535", first.Port)
	}
	addr := net.JoinHostPort(n.Address.String(), strconv.Itoa(int(first.Port)))
	ctx := stream.Context()
	conn, err := s.c.DialContext(ctx, "tcp", addr)
	if err != nil {
		return status.Errorf(codes.Unavailable, "%s (%s): %v", n.Name, addr, err)
	}
	defer conn.Close()
	if len(first.Data) > 0 {
		if _, err := conn.Write(first.Data); err != nil {
			return status.Errorf(codes.Unavailable, "%s: %v", addr, err)
		}
	}
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				// The client's end of stream half-closes; anything else ends
				// the connection.
				if cw, ok := conn.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
					_ = cw.CloseWrite()
				} else {
					conn.Close()
				}
				return
			}
			if _, err := conn.Write(in.Data); err != nil {
				conn.Close()
				return
			}
		}
	}()
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	buf := make([]byte, 32<<10)
	for {
		k, err := conn.Read(buf)
		if k > 0 {
			if serr := stream.Send(&api.Data{Data: buf[:k]}); serr != nil {
				return serr
			}
		}
		if err != nil {
			return nil // the node closed, or the client went away
		}
	}
}

// Logs streams a gzip-compressed tar of the cluster's log directory.
func (s *Server) Logs(_ *api.LogsRequest, stream api.Control_LogsServer) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteLogs(pw, s.c)) }()
	defer pr.Close()
	buf := make([]byte, 64<<10)
	for {
		k, err := io.ReadFull(pr, buf)
		if k > 0 {
			if serr := stream.Send(&api.Data{Data: buf[:k]}); serr != nil {
				return serr
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return status.Errorf(codes.Internal, "logs: %v", err)
		}
	}
}

// WriteLogs writes a gzip-compressed tar of c's log directory (every node's
// console log, QEMU command line and swtpm log, the switch's log, packet
// captures) to w, under a top directory named NAME-logs. Files still being
// written are cut at their size when reached.
func WriteLogs(w io.Writer, c *cluster.Cluster) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	top := c.Name + "-logs"
	now := time.Now()
	err := filepath.WalkDir(c.LogDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(c.LogDir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(filepath.Join(top, rel))
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: 0o755, ModTime: now})
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
			return err
		}
		// A log that shrank meanwhile is padded, one that grew is cut.
		k, err := io.Copy(tw, io.LimitReader(f, fi.Size()))
		if err != nil {
			return err
		}
		if k < fi.Size() {
			_, err = io.CopyN(tw, zeros{}, fi.Size()-k)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("logs of %s: %w", c.LogDir, err)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Snapshot freezes the cluster into r.Dir and keeps it running.
func (s *Server) Snapshot(ctx context.Context, r *api.SnapshotRequest) (*api.SnapshotResponse, error) {
	if !filepath.IsAbs(r.Dir) {
		return nil, status.Errorf(codes.InvalidArgument, "snapshot directory %q: want an absolute path", r.Dir)
	}
	info, err := s.c.Snapshot(ctx, r.Dir, cluster.SnapshotOptions{})
	if err != nil {
		return nil, toStatus(err)
	}
	return &api.SnapshotResponse{Dir: info.Dir, PausedSeconds: info.Paused.Seconds(), Bytes: info.Bytes, StateBytes: info.StateBytes}, nil
}
