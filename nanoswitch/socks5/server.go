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
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"github.com/qcluster/qcluster/nanoswitch/relay"
)

// ErrNotAllowed, wrapped in an error of Server.Dial, answers the client with
// ReplyNotAllowed. It is relay.ErrNotAllowed, shared with the HTTP proxy.
var ErrNotAllowed = relay.ErrNotAllowed

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

	group relay.Group
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
	return s.group.Serve(ln, "socks5", s.serveConn)
}

// Close closes the listeners and the clients' connections and waits for
// the goroutines serving them.
func (s *Server) Close() error {
	s.group.Close()
	return nil
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
	if !(relay.Credentials{Username: s.Username, Password: s.Password}).Match(user, pass) {
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
	up, err := s.group.Dial(ctx, s.Dial, "tcp", target)
	cancel()
	_ = c.SetWriteDeadline(time.Now().Add(timeout)) // for the reply, however long Dial took
	if err != nil {
		_, _ = c.Write(encodeReply(ReplyCode(err), netip.AddrPort{}))
		log.Info("socks5: connect refused", "target", target, "err", err)
		return
	}
	var bound netip.AddrPort
	if a, ok := up.LocalAddr().(*net.TCPAddr); ok {
		bound = a.AddrPort()
	}
	if _, err := c.Write(encodeReply(ReplySucceeded, bound)); err != nil {
		up.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	log.Debug("socks5: connected", "target", target)
	s.group.Splice(c, up)
}
