package hostproxy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol constants of RFC 1928 (sections 3 to 6) and RFC 1929 (section 2).
const (
	SOCKSVersion   = 5
	MethodNone     = 0xff // no acceptable methods
	MethodNoAuth   = 0x00
	MethodUserPass = 0x02
	authVersion    = 1

	CmdConnect      = 1
	CmdBind         = 2
	CmdUDPAssociate = 3

	atypIPv4   = 1
	atypDomain = 3
	atypIPv6   = 4
)

// Reply codes (RFC 1928 section 6).
const (
	ReplySucceeded            = 0x00
	ReplyGeneralFailure       = 0x01
	ReplyNotAllowed           = 0x02 // connection not allowed by ruleset
	ReplyNetUnreachable       = 0x03
	ReplyHostUnreachable      = 0x04
	ReplyConnRefused          = 0x05
	ReplyTTLExpired           = 0x06
	ReplyCmdNotSupported      = 0x07
	ReplyAddrTypeNotSupported = 0x08
)

var (
	errVersion  = errors.New("socks5: wrong version")
	errMsg      = errors.New("socks5: malformed message")
	errAddrType = errors.New("socks5: unknown address type")
)

// readGreeting reads the version identifier/method selection message and
// returns the methods the client offers.
func readGreeting(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	if h[0] != SOCKSVersion {
		return nil, fmt.Errorf("%w %d", errVersion, h[0])
	}
	if h[1] == 0 {
		return nil, fmt.Errorf("%w: no methods", errMsg)
	}
	methods := make([]byte, h[1])
	if _, err := io.ReadFull(r, methods); err != nil {
		return nil, err
	}
	return methods, nil
}

func encodeGreeting(methods ...byte) []byte {
	return append([]byte{SOCKSVersion, byte(len(methods))}, methods...)
}

// readUserPass reads the username/password request of RFC 1929.
func readUserPass(r io.Reader) (user, pass string, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", "", err
	}
	if h[0] != authVersion {
		return "", "", fmt.Errorf("%w %d of username/password authentication", errVersion, h[0])
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

func encodeUserPass(user, pass string) []byte {
	b := append([]byte{authVersion, byte(len(user))}, user...)
	return append(append(b, byte(len(pass))), pass...)
}

// request is a client's request: a command and its destination, a host
// name or an address.
type request struct {
	cmd  byte
	host string     // for a domain name
	addr netip.Addr // for an IPv4 or IPv6 address
	port uint16
}

func (q request) target() string {
	if q.host != "" {
		return q.host
	}
	return q.addr.String()
}

// readRequest reads a request message.
func readRequest(r io.Reader) (request, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return request{}, err
	}
	if h[0] != SOCKSVersion {
		return request{}, fmt.Errorf("%w %d", errVersion, h[0])
	}
	q := request{cmd: h[1]}
	switch h[3] {
	case atypIPv4:
		var a [4]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return q, err
		}
		q.addr = netip.AddrFrom4(a)
	case atypIPv6:
		var a [16]byte
		if _, err := io.ReadFull(r, a[:]); err != nil {
			return q, err
		}
		q.addr = netip.AddrFrom16(a)
	case atypDomain:
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return q, err
		}
		if n[0] == 0 {
			return q, fmt.Errorf("%w: empty host name", errMsg)
		}
		b := make([]byte, n[0])
		if _, err := io.ReadFull(r, b); err != nil {
			return q, err
		}
		q.host = string(b)
	default:
		return q, fmt.Errorf("%w %d", errAddrType, h[3])
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return q, err
	}
	q.port = binary.BigEndian.Uint16(p[:])
	return q, nil
}

func encodeRequest(q request) []byte {
	b := []byte{SOCKSVersion, q.cmd, 0}
	switch {
	case q.host != "":
		b = append(append(b, atypDomain, byte(len(q.host))), q.host...)
	case q.addr.Is4():
		b = append(append(b, atypIPv4), q.addr.AsSlice()...)
	default:
		b = append(append(b, atypIPv6), q.addr.AsSlice()...)
	}
	return binary.BigEndian.AppendUint16(b, q.port)
}

// encodeReply encodes a reply with the bound address (0.0.0.0:0 if it is
// not IPv4).
func encodeReply(code byte, bound netip.AddrPort) []byte {
	a := netip.IPv4Unspecified()
	if bound.Addr().Unmap().Is4() {
		a = bound.Addr().Unmap()
	}
	b := []byte{SOCKSVersion, code, 0, atypIPv4}
	b = append(b, a.AsSlice()...)
	return binary.BigEndian.AppendUint16(b, bound.Port())
}

// readReply reads a reply and returns its code and bound address.
func readReply(r io.Reader) (byte, netip.AddrPort, error) {
	var h [4]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	if h[0] != SOCKSVersion {
		return 0, netip.AddrPort{}, fmt.Errorf("%w %d", errVersion, h[0])
	}
	var a netip.Addr
	switch h[3] {
	case atypIPv4:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, netip.AddrPort{}, err
		}
		a = netip.AddrFrom4(b)
	case atypIPv6:
		var b [16]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, netip.AddrPort{}, err
		}
		a = netip.AddrFrom16(b)
	case atypDomain: // a bound name: read and drop it
		var n [1]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return 0, netip.AddrPort{}, err
		}
		if _, err := io.ReadFull(r, make([]byte, n[0])); err != nil {
			return 0, netip.AddrPort{}, err
		}
	default:
		return 0, netip.AddrPort{}, fmt.Errorf("%w %d", errAddrType, h[3])
	}
	var p [2]byte
	if _, err := io.ReadFull(r, p[:]); err != nil {
		return 0, netip.AddrPort{}, err
	}
	return h[1], netip.AddrPortFrom(a, binary.BigEndian.Uint16(p[:])), nil
}
