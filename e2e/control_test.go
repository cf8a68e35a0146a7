package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/proxy"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/qcluster/qcluster/resolve"
	"github.com/qcluster/qcluster/testos/api"
)

// ctl runs cluster subcommands against one registry, as a second terminal
// would.
type ctl struct {
	t   *testing.T
	bin string
	env []string
}

func (c ctl) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	return cmd
}

// run runs a subcommand to its end and returns its stdout; a failure ends
// the test with its stderr.
func (c ctl) run(args ...string) string {
	c.t.Helper()
	var out, errb bytes.Buffer
	cmd := c.cmd(args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		c.t.Fatalf("cluster %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

type ctlStatus struct {
	Name     string `json:"name"`
	StateDir string `json:"state_dir"`
	PID      int    `json:"pid"`
	EnvFile  string `json:"env_file"`
	CA       string `json:"ca_cert"`
	Cert     string `json:"client_cert"`
	Key      string `json:"client_key"`
	SOCKS5   struct {
		Address string `json:"address"`
	} `json:"socks5"`
	Nodes []struct {
		Name, State string
	} `json:"nodes"`
}

func allReady(st ctlStatus) bool {
	for _, n := range st.Nodes {
		if n.State != "ready" {
			return false
		}
	}
	return true
}

// TestControl drives a detached cluster through the cluster command's
// subcommands alone, from up --detach to down, and real clients through
// the host-access proxy: grpcurl as the summary prints it, and raw HTTP
// CONNECTs that are refused.
func TestControl(t *testing.T) {
	needsVMs(t)
	bin, err := buildCommand()
	if err != nil {
		t.Fatal(err)
	}
	root, err := resolve.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	xdg := t.TempDir()
	c := ctl{t: t, bin: bin, env: append(os.Environ(), "XDG_RUNTIME_DIR="+xdg, "NO_COLOR=1")}
	const name = "e2ectl"

	// Restored from the template TestCluster's clusters come from (made
	// here if missing), as a user's `cluster up` is.
	up := c.cmd("up", "--name", name, "--nodes", "3", "--accel", "tcg", "--timeout", launchTimeout.String(), "--detach")
	up.Dir = root
	var upErr bytes.Buffer
	up.Stderr = &upErr
	if err := up.Run(); err != nil {
		t.Fatalf("up --detach: %v\n%s", err, upErr.String())
	}
	var st ctlStatus
	if err := json.Unmarshal([]byte(c.run("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	// Whatever happens below, the background launcher goes (and its
	// children with it).
	t.Cleanup(func() {
		if p, err := os.FindProcess(st.PID); err == nil && p.Signal(syscall.Signal(0)) == nil {
			c.cmd("down", name).Run()
			p.Kill()
		}
	})
	if st.Name != name || len(st.Nodes) != 3 || !allReady(st) {
		t.Fatalf("status after up --detach: %+v", st)
	}
	var ls []struct {
		Name  string
		Nodes []struct{ Name, State string }
	}
	if err := json.Unmarshal([]byte(c.run("ls", "--json")), &ls); err != nil || len(ls) != 1 || ls[0].Name != name || len(ls[0].Nodes) != 3 {
		t.Fatalf("ls --json: %+v %v", ls, err)
	}

	t.Run("GrpcurlAsPrinted", func(t *testing.T) {
		grpcurl := filepath.Join(root, "out/bin/grpcurl")
		if _, err := os.Stat(grpcurl); err != nil {
			if grpcurl, err = exec.LookPath("grpcurl"); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatal("grpcurl missing: make tools installs it into out/bin")
				}
				t.Skip("grpcurl missing: make tools installs it into out/bin")
			}
		}
		var lines []string
		for _, l := range strings.Split(c.run("status"), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "source ") || strings.HasPrefix(l, "grpcurl ") {
				lines = append(lines, l)
			}
		}
		if len(lines) != 2 {
			t.Fatalf("status prints no source and grpcurl lines: %q", lines)
		}
		sh := exec.Command("bash", "-c", strings.Join(lines, "\n"))
		sh.Env = append(os.Environ(), "PATH="+filepath.Dir(grpcurl)+":"+os.Getenv("PATH"))
		out, err := sh.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "qcluster.testos") {
			t.Errorf("%s: %v\n%s", strings.Join(lines, "; "), err, out)
		}
	})

	t.Run("ConnectRefusals", func(t *testing.T) {
		for target, want := range map[string]int{"10.42.0.10:7443": 407, "127.0.0.1:22": 403} {
			conn, err := net.Dial("tcp", st.SOCKS5.Address)
			if err != nil {
				t.Fatal(err)
			}
			auth := ""
			if want == 403 {
				creds, err := os.ReadFile(st.EnvFile)
				if err != nil {
					t.Fatal(err)
				}
				// HTTPS_PROXY=http://user:pass@host:port
				_, rest, _ := strings.Cut(string(creds), "HTTPS_PROXY=http://")
				userpass, _, _ := strings.Cut(rest, "@")
				req, _ := http.NewRequest("GET", "http://x", nil)
				u, p, _ := strings.Cut(userpass, ":")
				req.SetBasicAuth(u, p)
				auth = "Proxy-Authorization: " + req.Header.Get("Authorization") + "\r\n"
			}
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", target, target, auth)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			conn.Close()
			if err != nil || resp.StatusCode != want {
				t.Errorf("CONNECT %s: %v %v, want %d", target, resp, err, want)
			}
		}
	})

	t.Run("Reboot", func(t *testing.T) {
		start := time.Now()
		c.run("reboot", name, "node1")
		t.Logf("cluster reboot node1: %s from command start to ready", time.Since(start).Round(time.Millisecond))
		var after ctlStatus
		if err := json.Unmarshal([]byte(c.run("status", name, "--json")), &after); err != nil || after.Nodes[1].State != "ready" {
			t.Errorf("after reboot: %+v %v", after, err)
		}
	})

	t.Run("PartitionHeal", func(t *testing.T) {
		leader := agentClient(t, st)
		health := func(want bool) time.Duration {
			t.Helper()
			start := time.Now()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				r, err := leader.List(ctx, &api.ListRequest{})
				cancel()
				for _, m := range r.GetMembers() {
					if m.GetName() == "node1" && m.GetHealthy() == want {
						return time.Since(start)
					}
				}
				if time.Since(start) > healthWithin {
					t.Fatalf("node1 healthy=%v at the leader not seen within %s: %v %v", want, healthWithin, r.GetMembers(), err)
				}
				<-tick.C
			}
		}
		health(true)
		c.run("partition", name, "node0", "node1")
		t.Logf("partition → node1 unhealthy at the leader: %s", health(false).Round(10*time.Millisecond))
		c.run("heal", name)
		t.Logf("heal → node1 healthy again: %s", health(true).Round(10*time.Millisecond))
	})

	t.Run("Console", func(t *testing.T) {
		ptm, pts := openPTY(t)
		defer ptm.Close()
		cmd := c.cmd("console", name, "node0")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, pts, pts
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pts.Close()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// The history comes first: the agent's lines are in it (on a
		// restored node, the line it logs when told it was restored).
		// Read in a goroutine: /dev/ptmx ignores read deadlines.
		chunks := make(chan []byte)
		go func() {
			defer close(chunks)
			for {
				buf := make([]byte, 4096)
				k, err := ptm.Read(buf)
				if k > 0 {
					chunks <- buf[:k]
				}
				if err != nil {
					return
				}
			}
		}()
		var seen bytes.Buffer
		timeout := time.After(time.Minute)
		for !strings.Contains(seen.String(), "qcluster") {
			select {
			case b, ok := <-chunks:
				if !ok {
					t.Fatalf("console ended before an agent line: %q", seen.String())
				}
				seen.Write(b)
			case <-timeout:
				cmd.Process.Kill()
				t.Fatalf("no agent line on the console within a minute: %q", seen.String())
			}
		}
		if _, err := ptm.Write([]byte{0x1d}); err != nil { // Ctrl-]
			t.Fatal(err)
		}
		go func() {
			for range chunks {
			}
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("console after Ctrl-]: %v", err)
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatal("console did not detach on Ctrl-]")
		}
		if out := c.run("ls"); !strings.Contains(out, name) {
			t.Errorf("cluster gone after the console detached: %q", out)
		}
	})

	t.Run("ConnectTLS", func(t *testing.T) {
		cmd := c.cmd("connect", name, "node0", "7443")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		defer in.Close()
		cfg := ownerTLS(t, st)
		cfg.NextProtos = []string{"h2"}
		conn := tls.Client(&stdioConn{r: out, w: in}, cfg)
		if err := conn.Handshake(); err != nil {
			t.Fatalf("TLS handshake with the agent through cluster connect: %v", err)
		}
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Errorf("negotiated %q, want h2 (gRPC)", p)
		}
	})

	t.Run("Logs", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "logs.tar.gz")
		c.run("logs", name, "-o", file)
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names[h.Name] = true
		}
		for _, n := range []string{"node0/console.log", "node1/console.log", "node0/qemu.sh", "nanoswitch.log"} {
			if !names[name+"-logs/"+n] {
				t.Errorf("logs lack %s: %v", n, names)
			}
		}
	})

	c.run("down", name)
	if out := c.run("ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("ls after down: %s", out)
	}
	if p, _ := os.FindProcess(st.PID); p.Signal(syscall.Signal(0)) == nil && !zombie(st.PID) {
		t.Errorf("launcher %d still running after down", st.PID)
	}
	if _, err := os.Stat(st.StateDir); !os.IsNotExist(err) {
		t.Errorf("state directory left after down: %v", err)
	}
}

// agentClient calls node0's Membership service through the host-access
// proxy (SOCKS5 here; grpcurl covers CONNECT), with the env file's
// credentials and the owner's certificate.
func agentClient(t *testing.T, st ctlStatus) api.MembershipClient {
	t.Helper()
	env, err := os.ReadFile(st.EnvFile)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(env), "HTTPS_PROXY=")
	u, err := url.Parse(strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0]))
	if err != nil {
		t.Fatal(err)
	}
	pass, _ := u.User.Password()
	d, err := proxy.SOCKS5("tcp", u.Host, &proxy.Auth{User: u.User.Username(), Password: pass}, proxy.Direct)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///node0:7443",
		grpc.WithTransportCredentials(credentials.NewTLS(ownerTLS(t, st))),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.(proxy.ContextDialer).DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return api.NewMembershipClient(conn)
}

// ownerTLS is the TLS client configuration of the cluster's owner for
// node0's agent: the cluster CA and the owner's certificate from the status.
func ownerTLS(t *testing.T, st ctlStatus) *tls.Config {
	t.Helper()
	caPEM, err := os.ReadFile(st.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(st.Cert, st.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "node0"}
}

func zombie(pid int) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// openPTY opens a pseudo-terminal pair.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ptm, pts
}

// stdioConn is a net.Conn over a child's stdout and stdin.
type stdioConn struct {
	r io.Reader
	w io.WriteCloser
}

func (c *stdioConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *stdioConn) Close() error                     { return c.w.Close() }
func (c *stdioConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "stdio"} }
func (c *stdioConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "stdio"} }
func (c *stdioConn) SetDeadline(time.Time) error      { return nil }
func (c *stdioConn) SetReadDeadline(time.Time) error  { return nil }
func (c *stdioConn) SetWriteDeadline(time.Time) error { return nil }
