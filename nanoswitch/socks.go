package nanoswitch

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"
)

// SOCKS5 (RFC 1928) with username/password authentication (RFC 1929),
// CONNECT only, for tools outside the process (curl, grpcurl, ssh with a
// ProxyCommand). A client that does not offer username/password, or gives
// the wrong credentials, is turned away; destinations outside the cluster
// get reply 0x02 (not allowed by ruleset), unknown cluster names 0x04 (host
// unreachable).

// SOCKSInfo says how to reach the SOCKS5 server.
type SOCKSInfo struct {
	// Addr is on 127.0.0.1, with a port chosen by the kernel.
	Addr               netip.AddrPort
	Username, Password string
}

type socksServer struct {
	ls   *listenerServer
	info SOCKSInfo
}

func (s *socksServer) close() { _ = s.ls.close() }

// SOCKS returns the SOCKS5 server's address and credentials, and false if
// it is not running (Config.SOCKS unset).
func (s *Switch) SOCKS() (SOCKSInfo, bool) {
	if s.socks == nil {
		return SOCKSInfo{}, false
	}
	return s.socks.info, true
}

// socksHandshakeTimeout bounds a client's handshake, up to the reply.
const socksHandshakeTimeout = 30 * time.Second

func (s *Switch) startSOCKS() error {
	if !s.cfg.SOCKS {
		return nil
	}
	if s.cfg.SOCKSPassword == "" {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		s.cfg.SOCKSPassword = hex.EncodeToString(b)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	info := SOCKSInfo{
		Addr:     ln.Addr().(*net.TCPAddr).AddrPort(),
		Username: s.cfg.SOCKSUsername,
		Password: s.cfg.SOCKSPassword,
	}
	ls, err := s.serve(ln, s.serveSOCKS)
	if err != nil {
		return err
	}
	s.socks = &socksServer{ls: ls, info: info}
	s.cfg.Logger.Info("socks5 listening", "addr", info.Addr)
	return nil
}

// SOCKS5 constants (RFC 1928 section 3 to 6, RFC 1929 section 2).
const (
	socksVersion        = 5
	socksAuthVersion    = 1
	socksMethodUserPass = 0x02
	socksNoMethod       = 0xff
	socksCmdConnect     = 1
	socksAtypIPv4       = 1
	socksAtypDomain     = 3
	socksAtypIPv6       = 4

	socksSucceeded          = 0x00
	socksGeneralFailure     = 0x01
	socksNotAllowed         = 0x02
	socksNetUnreachable     = 0x03
	socksHostUnreachable    = 0x04
	socksConnRefused        = 0x05
	socksCmdNotSupported    = 0x07
	socksAddrTypeNotSupport = 0x08
)

var (
	errSOCKSVersion  = errors.New("socks5: wrong version")
	errSOCKSMsg      = errors.New("socks5: malformed message")
	errSOCKSAddrType = errors.New("socks5: unknown address type")
)

// readGreeting reads the version identifier/method selection message and
// returns the methods the client offers.
func readGreeting(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != socksVersion {
		return nil, fmt.Errorf("%w %d", errSOCKSVersion, h[0])
	}
	if h[1] == 0 {
		return nil, fmt.Errorf("%w: no methods", errSOCKSMsg)
	}
	methods := make([]byte, h[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

// readUserPass reads the username/password request of RFC 1929.
func readUserPass(r io.Reader) (user, pass string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", "", err
	}
	if h[0] != socksAuthVersion {
		return "", "", fmt.Errorf("%w %d of username/password authentication", errSOCKSVersion, h[0])
	}
	u := make([]byte, h[1])
	if _, err := io.ReadFull(r, u); err != nil {
		return "", "", err
	}
	if _, err := io.ReadFull(r, h[:1]); err != nil {
		return "", "", err
	}
	p := make([]byte, h[0])
	if _, err := io.ReadFull(r, p); err != nil {
		return "", "", err
	}
	return string(u), string(p), nil
}

// socksRequest is a client's request: a command and its destination, a
// host name or an address.
type socksRequest struct {
	cmd  byte
	host string     // for a domain name
	addr netip.Addr // for an IPv4 or IPv6 address
	port uint16
}

func (q socksRequest) target() string {
	if q.host != "" {
		return q.host
	}
	return q.addr.String()
}

// readRequest reads a request message.
func readRequest(r io.Reader) (socksRequest, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return socksRequest{}, err
	}
	if h[0] != socksVersion {
		return socksRequest{}, fmt.Errorf("%w %d", errSOCKSVersion, h[0])
	}
	q := socksRequest{cmd: h[1]}
	switch h[3] {
	case socksAtypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return q, err
		}
		q.addr = netip.AddrFrom4(a)
	case socksAtypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return q, err
		}
		q.addr = netip.AddrFrom16(a)
	case socksAtypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return q, err
		}
		if n[0] == 0 {
			return q, fmt.Errorf("%w: empty host name", errSOCKSMsg)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return q, err
		}
		q.host = string(b)
	default:
		return q, fmt.Errorf("%w %d", errSOCKSAddrType, h[3])
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return q, err
	}
	q.port = binary.BigEndian.Uint16(p[:])
	return q, nil
}

// socksReply encodes a reply with the bound address (0.0.0.0:0 if not
// valid).
func socksReply(code byte, bound netip.AddrPort) []byte {
	a := netip.IPv4Unspecified()
	if bound.Addr().Is4() {
		a = bound.Addr()
	}
	b := []byte{socksVersion, code, 0, socksAtypIPv4}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, bound.Port())
}

// serveSOCKS runs one client's session.
func (s *Switch) serveSOCKS(c net.Conn) {
	log := s.cfg.Logger.With("client", c.RemoteAddr().String())
	_ = c.SetDeadline(time.Now().Add(socksHandshakeTimeout))
	methods, err := readGreeting(c)
	if err != nil {
		log.Debug("socks5: greeting", "err", err)
		return
	}
	if !slices.Contains(methods, socksMethodUserPass) {
		_, _ = c.Write([]byte{socksVersion, socksNoMethod})
		log.Info("socks5: refused a client that does not offer username/password")
		return
	}
	if _, err := c.Write([]byte{socksVersion, socksMethodUserPass}); err != nil {
		return
	}
	user, pass, err := readUserPass(c)
	if err != nil {
		log.Debug("socks5: authentication", "err", err)
		return
	}
	info := s.socks.info
	okUser := subtle.ConstantTimeCompare([]byte(user), []byte(info.Username))
	okPass := subtle.ConstantTimeCompare([]byte(pass), []byte(info.Password))
	if okUser&okPass != 1 {
		_, _ = c.Write([]byte{socksAuthVersion, 1})
		log.Info("socks5: refused wrong credentials", "user", user)
		return
	}
	if _, err := c.Write([]byte{socksAuthVersion, 0}); err != nil {
		return
	}
	req, err := readRequest(c)
	if err != nil {
		if errors.Is(err, errSOCKSAddrType) {
			_, _ = c.Write(socksReply(socksAddrTypeNotSupport, netip.AddrPort{}))
		}
		log.Debug("socks5: request", "err", err)
		return
	}
	if req.cmd != socksCmdConnect {
		_, _ = c.Write(socksReply(socksCmdNotSupported, netip.AddrPort{}))
		return
	}
	target := net.JoinHostPort(req.target(), fmt.Sprint(req.port))
	ctx, cancel := context.WithTimeout(context.Background(), socksHandshakeTimeout)
	up, err := s.DialContext(ctx, "tcp", target)
	cancel()
	if err != nil {
		_, _ = c.Write(socksReply(socksCode(err), netip.AddrPort{}))
		log.Info("socks5: connect refused", "target", target, "err", err)
		return
	}
	defer up.Close()
	bound := up.LocalAddr().(*net.TCPAddr).AddrPort()
	if _, err := c.Write(socksReply(socksSucceeded, bound)); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	log.Debug("socks5: connected", "target", target)
	s.splice(c, up)
}

// socksCode is the reply code for a DialContext error.
func socksCode(err error) byte {
	switch {
	case errors.Is(err, ErrNotCluster):
		return socksNotAllowed
	case errors.Is(err, ErrUnknownHost), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return socksHostUnreachable
	case errors.Is(err, syscall.ENETUNREACH):
		return socksNetUnreachable
	case errors.Is(err, syscall.ECONNREFUSED):
		return socksConnRefused
	}
	return socksGeneralFailure
}

// splice copies both ways between a and b until both directions end,
// passing each end of stream on as a half-close.
func (s *Switch) splice(a, b net.Conn) {
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		} else {
			_ = dst.Close()
		}
	}
	if err := s.goroutines(1); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer s.wg.Done()
		defer close(done)
		pipe(b, a)
	}()
	pipe(a, b)
	<-done
}
