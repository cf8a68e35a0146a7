package nanoswitch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
)

// The DNS server answers on the gateway's port 53, UDP and TCP (RFC 1035,
// RFC 7766). It is authoritative for the cluster: "<host>.<Domain>" and the
// bare "<host>" resolve to a lease's address (A), "gateway" to the gateway,
// and the reverse names of those addresses to "<host>.<Domain>" (PTR). A
// known name asked for another type gets an empty answer; an unknown name in
// the domain gets NXDOMAIN. Names outside the domain get NXDOMAIN on a
// hermetic network; with AllowOutbound, A and AAAA questions for them are
// answered from the host's resolver.
//
// It is written on golang.org/x/net/dns/dnsmessage rather than taken from
// gvisor-tap-vsock (whose DNS service sends every name outside its zones to
// the host's resolver, answers only A records, and spawns goroutines per
// query that cannot be waited for).

const (
	dnsPort = 53
	dnsTTL  = 60 // seconds; leases are static
)

// startDNS serves DNS on the gateway's UDP and TCP port 53.
func (s *Switch) startDNS() error {
	laddr := &tcpip.FullAddress{NIC: nicID, Addr: tcpip.AddrFrom4(s.cfg.Gateway.As4()), Port: dnsPort}
	uc, err := gonet.DialUDP(s.stack, laddr, nil, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("udp port %d: %w", dnsPort, err)
	}
	s.services = append(s.services, uc.Close)
	if err := s.spawn(func() {
		buf := make([]byte, 4096)
		for {
			n, peer, err := uc.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			q := append([]byte(nil), buf[:n]...)
			reply := func() {
				if resp := s.dnsAnswer(q, 512); resp != nil {
					_, _ = uc.WriteTo(resp, peer)
				}
			}
			if !s.cfg.AllowOutbound || s.spawn(reply) != nil { // may wait for the host's resolver
				reply()
			}
		}
	}); err != nil {
		return err
	}
	ln, err := gonet.ListenTCP(s.stack, *laddr, ipv4.ProtocolNumber)
	if err != nil {
		return fmt.Errorf("tcp port %d: %w", dnsPort, err)
	}
	s.services = append(s.services, ln.Close)
	return s.spawn(func() {
		acceptAll(ln, func(c net.Conn) error {
			return s.spawn(func() { // ends at the latest when Close closes the stack
				defer c.Close()
				s.serveDNSConn(c)
			})
		})
	})
}

// serveDNSConn answers queries on a TCP connection: each message is
// preceded by its 2-byte length.
func (s *Switch) serveDNSConn(c net.Conn) {
	for {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		q := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, q); err != nil {
			return
		}
		resp := s.dnsAnswer(q, 65535)
		if resp == nil {
			return
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

func lowerTrimDot(name string) string {
	return strings.TrimSuffix(strings.ToLower(name), ".")
}

// dnsAnswer answers one query message, or returns nil for a message too
// broken to answer. limit is the largest reply the transport carries.
func (s *Switch) dnsAnswer(query []byte, limit int) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil
	}
	rh := dnsmessage.Header{ID: h.ID, Response: true, OpCode: h.OpCode, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, Authoritative: true}
	q, err := p.Question()
	if err != nil {
		rh.RCode = dnsmessage.RCodeFormatError
		return buildDNS(rh, nil, nil)
	}
	if h.OpCode != 0 {
		rh.RCode = dnsmessage.RCodeNotImplemented
		return buildDNS(rh, &q, nil)
	}
	var answers []dnsmessage.Resource
	rh.RCode, answers = s.resolveQuestion(q)
	resp := buildDNS(rh, &q, answers)
	if len(resp) > limit { // never for cluster names; truncate for the rest
		rh.Truncated = true
		resp = buildDNS(rh, &q, nil)
	}
	return resp
}

func buildDNS(h dnsmessage.Header, q *dnsmessage.Question, answers []dnsmessage.Resource) []byte {
	m := dnsmessage.Message{Header: h, Answers: answers}
	if q != nil {
		m.Questions = []dnsmessage.Question{*q}
	}
	b, err := m.Pack()
	if err != nil {
		return nil
	}
	return b
}

// resolveQuestion answers one question.
func (s *Switch) resolveQuestion(q dnsmessage.Question) (dnsmessage.RCode, []dnsmessage.Resource) {
	name := lowerTrimDot(q.Name.String())
	hdr := dnsmessage.ResourceHeader{Name: q.Name, Type: q.Type, Class: dnsmessage.ClassINET, TTL: dnsTTL}
	if q.Class != dnsmessage.ClassINET && q.Class != dnsmessage.ClassANY {
		return dnsmessage.RCodeRefused, nil
	}
	if name == s.cfg.Domain {
		return dnsmessage.RCodeSuccess, nil // the zone's apex exists and has no addresses
	}
	short, inZone := strings.CutSuffix(name, "."+s.cfg.Domain)
	if !inZone && !strings.Contains(name, ".") {
		short, inZone = name, s.nameAddr(name).IsValid()
	}
	if inZone {
		a := s.nameAddr(short)
		if !a.IsValid() {
			return dnsmessage.RCodeNameError, nil
		}
		if q.Type != dnsmessage.TypeA && q.Type != dnsmessage.TypeALL {
			return dnsmessage.RCodeSuccess, nil
		}
		hdr.Type = dnsmessage.TypeA
		return dnsmessage.RCodeSuccess, []dnsmessage.Resource{{Header: hdr, Body: &dnsmessage.AResource{A: a.As4()}}}
	}
	if a, ok := parseReverse(name); ok && s.cfg.Subnet.Contains(a) {
		host := s.addrName(a)
		if host == "" {
			return dnsmessage.RCodeNameError, nil
		}
		if q.Type != dnsmessage.TypePTR && q.Type != dnsmessage.TypeALL {
			return dnsmessage.RCodeSuccess, nil
		}
		hdr.Type = dnsmessage.TypePTR
		target, err := dnsmessage.NewName(host + "." + s.cfg.Domain + ".")
		if err != nil {
			return dnsmessage.RCodeServerFailure, nil
		}
		return dnsmessage.RCodeSuccess, []dnsmessage.Resource{{Header: hdr, Body: &dnsmessage.PTRResource{PTR: target}}}
	}
	if !s.cfg.AllowOutbound {
		return dnsmessage.RCodeNameError, nil
	}
	return s.resolveOutside(name, hdr)
}

// resolveOutside answers A and AAAA questions about names outside the
// cluster with the host's resolver.
func (s *Switch) resolveOutside(name string, hdr dnsmessage.ResourceHeader) (dnsmessage.RCode, []dnsmessage.Resource) {
	network := map[dnsmessage.Type]string{dnsmessage.TypeA: "ip4", dnsmessage.TypeAAAA: "ip6"}[hdr.Type]
	if network == "" {
		return dnsmessage.RCodeNotImplemented, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, network, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return dnsmessage.RCodeNameError, nil
		}
		return dnsmessage.RCodeServerFailure, nil
	}
	var rs []dnsmessage.Resource
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case hdr.Type == dnsmessage.TypeA && a.Is4():
			rs = append(rs, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AResource{A: a.As4()}})
		case hdr.Type == dnsmessage.TypeAAAA && a.Is6():
			rs = append(rs, dnsmessage.Resource{Header: hdr, Body: &dnsmessage.AAAAResource{AAAA: a.As16()}})
		}
	}
	return dnsmessage.RCodeSuccess, rs
}

// nameAddr returns the address of a short host name, or the zero Addr.
func (s *Switch) nameAddr(host string) netip.Addr {
	if host == GatewayPort {
		return s.cfg.Gateway
	}
	return s.leases.Load().byName[host].Addr
}

// addrName returns the short host name of a cluster address, or "".
func (s *Switch) addrName(a netip.Addr) string {
	if a == s.cfg.Gateway {
		return GatewayPort
	}
	return s.leases.Load().byAddr[a].Hostname
}

// parseReverse parses "d.c.b.a.in-addr.arpa" (RFC 1035 3.5).
func parseReverse(name string) (netip.Addr, bool) {
	rev, ok := strings.CutSuffix(name, ".in-addr.arpa")
	if !ok {
		return netip.Addr{}, false
	}
	parts := strings.Split(rev, ".")
	if len(parts) != 4 {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(parts[3] + "." + parts[2] + "." + parts[1] + "." + parts[0])
	return a, err == nil && a.Is4()
}
