// Package hostproxy is the switch's host-access proxies: a SOCKS5 server and
// client (RFC 1928 with the username/password authentication of RFC 1929,
// CONNECT only) and an HTTP CONNECT proxy (RFC 9110 section 9.3.6) with
// Basic proxy authentication. nanoswitch serves both on one loopback port,
// split by a Mux on the client's first byte, so that tools outside the
// process (curl, grpcurl, ssh, every Go gRPC client through HTTPS_PROXY)
// reach a cluster's nodes; SOCKSDialer is the Go client.
//
// What the two servers share beyond their protocols lives here once: the
// Config they are given, the credential check, dials that Close can cancel,
// splicing a client to its destination, and the bookkeeping that lets Close
// end every session.
package hostproxy

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ErrNotAllowed, wrapped in an error of a proxy's Dial function, means the
// destination is outside what the proxy serves (SOCKS5 reply 0x02, HTTP 403).
var ErrNotAllowed = errors.New("destination not allowed")

// DialFunc connects to a client's destination ("host:port", the host as
// the client sent it).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Config is what a server is given; both servers take the same.
type Config struct {
	// Username and Password are the only credentials accepted.
	Username, Password string
	// Dial connects to a client's destination: network is "tcp", address
	// "host:port" with the host as the client sent it (a name, an IPv4 or
	// an IPv6 address). An error wrapping ErrNotAllowed is answered with
	// SOCKS5 reply 0x02 or HTTP 403; see ReplyCode and StatusCode for the
	// others.
	Dial DialFunc
	// HandshakeTimeout bounds a client's handshake (the SOCKS5 greeting,
	// authentication and request, or the HTTP request), connecting
	// included. Default: 30s.
	HandshakeTimeout time.Duration
	// Logger receives one line per refused client. Default: discarded.
	Logger *slog.Logger
}

// begin starts a session on c: it bounds the handshake with the timeout
// (returned for what follows it) and returns the logger for the session.
func (cfg *Config) begin(c net.Conn) (*slog.Logger, time.Duration) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := cfg.HandshakeTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	return log.With("client", c.RemoteAddr().String()), timeout
}

func (cfg *Config) credentials() Credentials {
	return Credentials{Username: cfg.Username, Password: cfg.Password}
}

// Credentials are the only username and password a proxy accepts.
type Credentials struct {
	Username, Password string
}

// Match reports whether user and pass are the credentials, in time that
// does not depend on where they differ.
func (c Credentials) Match(user, pass string) bool {
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(c.Username))
	okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(c.Password))
	return okUser&okPass == 1
}

// Group tracks a proxy server's listeners, sessions, upstream connections
// and dials in progress, so that Close ends them all and waits for their
// goroutines. The zero value is ready to use.
type Group struct {
	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	// dials holds the cancel functions of dials in progress: Close ends
	// them rather than wait out their timeouts (a node that is not up yet).
	dials map[*context.CancelFunc]struct{}
	wg    sync.WaitGroup
}

func (g *Group) initLocked() {
	if g.lns == nil {
		g.lns, g.conns, g.dials = map[net.Listener]struct{}{}, map[net.Conn]struct{}{}, map[*context.CancelFunc]struct{}{}
	}
}

// Serve accepts connections on ln until ln or the group is closed, and
// returns nil then. Each connection is handled on a goroutine of its own
// and closed when handle returns; what is an error of Accept is wrapped
// with name.
func (g *Group) Serve(ln net.Listener, name string, handle func(net.Conn)) error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		ln.Close()
		return nil
	}
	g.initLocked()
	g.lns[ln] = struct{}{}
	g.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			g.mu.Lock()
			delete(g.lns, ln)
			closed := g.closed
			g.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("%s: accept: %w", name, err)
		}
		if !g.track(c) {
			c.Close()
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.untrack(c)
			defer c.Close()
			handle(c)
		}()
	}
}

// Close closes the listeners, the sessions and their upstream connections,
// cancels dials in progress, and waits for the goroutines serving them.
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	for ln := range g.lns {
		ln.Close()
	}
	for c := range g.conns {
		c.Close()
	}
	for cancel := range g.dials {
		(*cancel)()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// track registers a connection for Close; false if closed already.
func (g *Group) track(c net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.initLocked()
	g.conns[c] = struct{}{}
	return true
}

func (g *Group) untrack(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.conns, c)
}

// Dial calls dial under ctx, ending it early if the group is closed.
func (g *Group) Dial(ctx context.Context, dial DialFunc, network, address string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil, net.ErrClosed
	}
	g.initLocked()
	g.dials[&cancel] = struct{}{}
	g.mu.Unlock()
	c, err := dial(ctx, network, address)
	g.mu.Lock()
	delete(g.dials, &cancel)
	g.mu.Unlock()
	return c, err
}

// Splice copies both ways between a client and its upstream connection
// until both directions end, passing each end of stream on as a
// half-close, and closes up. Close ends it: a splice whose upstream peer is
// gone (a VM killed mid-connection) would otherwise read forever.
func (g *Group) Splice(client io.ReadWriter, up net.Conn) {
	defer up.Close()
	if !g.track(up) {
		return
	}
	defer g.untrack(up)
	g.wg.Add(1)
	done := make(chan struct{})
	go func() {
		defer g.wg.Done()
		defer close(done)
		copyThenCloseWrite(up, client)
	}()
	copyThenCloseWrite(client, up)
	<-done
}

func copyThenCloseWrite(dst io.Writer, src io.Reader) {
	_, _ = io.Copy(dst, src)
	switch d := dst.(type) {
	case interface{ CloseWrite() error }:
		_ = d.CloseWrite()
	case io.Closer:
		_ = d.Close()
	}
}

// readerConn is a connection whose reads go through a reader that holds
// what was read from it ahead (a Mux's first byte, what came behind an HTTP
// request); writes and half-closes go to the connection.
type readerConn struct {
	io.Reader
	net.Conn
}

func (c readerConn) Read(p []byte) (int, error) { return c.Reader.Read(p) }

// CloseWrite half-closes when the connection underneath can.
func (c readerConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
