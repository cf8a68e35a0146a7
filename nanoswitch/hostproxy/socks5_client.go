package hostproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// ReplyError is a server's refusal: its reply code (ReplyNotAllowed, …), or,
// for authentication, Code 0xff with Auth set.
type ReplyError struct {
	Code byte
	Auth bool // refused at authentication (method or credentials)
}

func (e *ReplyError) Error() string {
	if e.Auth {
		return "socks5: authentication refused"
	}
	names := map[byte]string{
		ReplyGeneralFailure: "general failure", ReplyNotAllowed: "connection not allowed by ruleset",
		ReplyNetUnreachable: "network unreachable", ReplyHostUnreachable: "host unreachable",
		ReplyConnRefused: "connection refused", ReplyTTLExpired: "TTL expired",
		ReplyCmdNotSupported: "command not supported", ReplyAddrTypeNotSupported: "address type not supported",
	}
	if n, ok := names[e.Code]; ok {
		return "socks5: " + n
	}
	return fmt.Sprintf("socks5: reply %#x", e.Code)
}

// SOCKSDialer connects through a SOCKS5 server with username/password
// authentication.
type SOCKSDialer struct {
	// Server is the proxy's "host:port".
	Server string
	// Username and Password are sent as RFC 1929 asks, at most 255 bytes
	// each.
	Username, Password string
}

// DialContext connects to address ("host:port"; the host is sent as a
// name unless it is an IP address) through the server. network must be
// "tcp", "tcp4" or "tcp6". A refusal is a *ReplyError.
func (d *SOCKSDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	fail := func(err error) (net.Conn, error) {
		return nil, fmt.Errorf("socks5 %s: connect %s: %w", d.Server, address, err)
	}
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return fail(fmt.Errorf("network %q: want tcp", network))
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return fail(err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fail(fmt.Errorf("port %q: %w", portStr, err))
	}
	q := request{cmd: CmdConnect, port: uint16(port)}
	if a, err := netip.ParseAddr(host); err == nil {
		q.addr = a.Unmap()
	} else if len(host) == 0 || len(host) > 255 {
		return fail(fmt.Errorf("host name of %d bytes: want 1 to 255", len(host)))
	} else {
		q.host = host
	}
	if len(d.Username) > 255 || len(d.Password) > 255 {
		return fail(errors.New("credentials longer than 255 bytes"))
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.Server)
	if err != nil {
		return fail(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err = d.handshake(c, q)
	if !stop() && err != nil {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		c.Close()
		return fail(err)
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

func (d *SOCKSDialer) handshake(c net.Conn, q request) error {
	var b [2]byte
	if _, err := c.Write(encodeGreeting(MethodUserPass)); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[0] != SOCKSVersion {
		return fmt.Errorf("%w %d", errVersion, b[0])
	}
	if b[1] != MethodUserPass {
		return &ReplyError{Code: b[1], Auth: true}
	}
	if _, err := c.Write(encodeUserPass(d.Username, d.Password)); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return err
	}
	if b[1] != 0 {
		return &ReplyError{Code: 0xff, Auth: true}
	}
	if _, err := c.Write(encodeRequest(q)); err != nil {
		return err
	}
	code, _, err := readReply(c)
	if err != nil {
		return err
	}
	if code != ReplySucceeded {
		return &ReplyError{Code: code}
	}
	return nil
}
