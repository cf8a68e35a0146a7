package hostproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// SOCKSServer serves SOCKS5 on the listeners given to Serve.
//
// Limits: no BIND, no UDP ASSOCIATE, no GSSAPI; the server always requires
// username/password (a client that does not offer it gets 0xFF, "no
// acceptable methods"); the bound address in replies is IPv4.
type SOCKSServer struct {
	Config

	group Group
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
func (s *SOCKSServer) Serve(ln net.Listener) error {
	return s.group.Serve(ln, "socks5", s.serveConn)
}

// Close closes the listeners and the clients' connections and waits for
// the goroutines serving them.
func (s *SOCKSServer) Close() error {
	s.group.Close()
	return nil
}

// serveConn runs one client's session.
func (s *SOCKSServer) serveConn(c net.Conn) {
	log, timeout := s.begin(c)
	methods, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: greeting", "err", err)
		return
	}
	if !slices.Contains(methods, MethodUserPass) {
		_, _ = c.Write([]byte{SOCKSVersion, MethodNone})
		log.Info("socks5: refused a client that does not offer username/password")
		return
	}
	if _, err := c.Write([]byte{SOCKSVersion, MethodUserPass}); err != nil {
		return
	}
	user, pass, err := readUserPass(c)
	if err != nil {
		log.Debug("socks5: authentication", "err", err)
		return
	}
	if !s.credentials().Match(user, pass) {
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
