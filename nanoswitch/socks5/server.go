// Package socks5 is a small SOCKS5 server and client: RFC 1928 with the
// username/password authentication of RFC 1929, CONNECT only. nanoswitch
// serves it on the host's loopback so that tools outside the process (curl,
// grpcurl, ssh) reach a cluster's nodes; its Dialer is the Go client.
//
// Limits: no BIND, no UDP ASSOCIATE, no GSSAPI; the server always requires
// username/password (a client that does not offer it gets 0xFF, "no
// acceptable methods"); the bound address in replies is IPv4.
package socks5

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"
)

// ErrNotAllowed, wrapped in an error of Server.Dial, answers the client with
// ReplyNotAllowed.
var ErrNotAllowed = errors.New("destination not allowed")

// Server serves SOCKS5 on the listeners given to Serve.
type Server struct {
	// Username and Password are the only credentials accepted.
	Username, Password string
	// Dial connects to a client's destination: network is "tcp", address
	// "host:port" with the host as the client sent it (a name, an IPv4 or
	// an IPv6 address). Its error picks the reply (see ReplyCode).
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// HandshakeTimeout bounds a client's handshake, connecting included.
	// Default: 30s.
	HandshakeTimeout time.Duration
	// Logger receives one line per refused client. Default: discarded.
	Logger *slog.Logger

	mu     sync.Mutex
	closed bool
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	// dials holds the cancel functions of dials in progress: Close ends
	// them rather than wait out their timeouts (a node that is not up yet).
	dials map[*context.CancelFunc]struct{}
	wg    sync.WaitGroup
}

// ReplyCode is the reply for a Dial error: ReplyNotAllowed for ErrNotAllowed,
// and for the errnos a kernel gives: ReplyConnRefused (ECONNREFUSED),
// ReplyHostUnreachable (EHOSTUNREACH, ETIMEDOUT, a deadline), ReplyNetUnreachable
// (ENETUNREACH); ReplyGeneralFailure otherwise.
func ReplyCode(err error) byte {
	switch {
	case errors.Is(err, ErrNotAllowed):
		return ReplyNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return ReplyHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return ReplyNetUnreachable
	}
	return ReplyGeneralFailure
}

// Serve accepts clients on ln until ln or the server is closed, and
// returns nil then. Each client is served on a goroutine of its own.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	if s.lns == nil {
		s.lns, s.conns, s.dials = map[net.Listener]struct{}{}, map[net.Conn]struct{}{}, map[*context.CancelFunc]struct{}{}
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			delete(s.lns, ln)
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("socks5: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close closes the listeners and the clients' connections and waits for
// the goroutines serving them.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	for cancel := range s.dials {
		(*cancel)()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// track registers an upstream connection for Close; false if closed already.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
}

func (s *Server) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

// serveConn runs one client's session.
func (s *Server) serveConn(c net.Conn) {
	log := s.logger().With("client", c.RemoteAddr().String())
	timeout := s.HandshakeTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	methods, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: greeting", "err", err)
		return
	}
	if !slices.Contains(methods, MethodUserPass) {
		_, _ = c.Write([]byte{Version, MethodNone})
		log.Info("socks5: refused a client that does not offer username/password")
		return
	}
	if _, err := c.Write([]byte{Version, MethodUserPass}); err != nil {
		return
	}
	user, pass, err := readUserPass(c)
	if err != nil {
		log.Debug("socks5: authentication", "err", err)
		return
	}
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(s.Username))
	okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(s.Password))
	if okUser&okPass != 1 {
		_, _ = c.Write([]byte{authVersion, 1})
		log.Info("socks5: refused wrong credentials", "user", user)
		return
	}
	if _, err := c.Write([]byte{authVersion, 0}); err != nil {
		return
	}
	req, err := readRequest(c)
	if err != nil {
		if errors.Is(err, errAddrType) {
			_, _ = c.Write(encodeReply(ReplyAddrTypeNotSupported, netip.AddrPort{}))
		}
		log.Debug("socks5: request", "err", err)
		return
	}
	if req.cmd != CmdConnect {
		_, _ = c.Write(encodeReply(ReplyCmdNotSupported, netip.AddrPort{}))
		return
	}
	target := net.JoinHostPort(req.target(), fmt.Sprint(req.port))
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(timeout))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return
	}
	s.dials[&cancel] = struct{}{}
	s.mu.Unlock()
	up, err := s.Dial(ctx, "tcp", target)
	s.mu.Lock()
	delete(s.dials, &cancel)
	s.mu.Unlock()
	cancel()
	_ = c.SetWriteDeadline(time.Now().Add(timeout)) // for the reply, however long Dial took
	if err != nil {
		_, _ = c.Write(encodeReply(ReplyCode(err), netip.AddrPort{}))
		log.Info("socks5: connect refused", "target", target, "err", err)
		return
	}
	defer up.Close()
	// Close closes upstream connections too: a splice whose upstream peer
	// is gone (a VM killed mid-connection) would otherwise read forever.
	if !s.track(up) {
		return
	}
	defer s.untrack(up)
	var bound netip.AddrPort
	if a, ok := up.LocalAddr().(*net.TCPAddr); ok {
		bound = a.AddrPort()
	}
	if _, err := c.Write(encodeReply(ReplySucceeded, bound)); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	log.Debug("socks5: connected", "target", target)
	s.splice(c, up)
}

// splice copies both ways between a and b until both directions end,
// passing each end of stream on as a half-close.
func (s *Server) splice(a, b net.Conn) {
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	s.wg.Add(1)
	done := make(chan struct{})
	go func() {
		defer s.wg.Done()
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}
