package nanoswitch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/qcluster/qcluster/nanoswitch/hostproxy"
)

// The host-access port for tools outside the process: SOCKS5 and HTTP
// CONNECT (package hostproxy) on one loopback port, told
// apart by the client's first byte (0x05 opens a SOCKS5 greeting; an HTTP
// request starts with a letter). Both check the same credentials and
// connect through hostDial, so they reach the cluster's addresses and names
// only: destinations outside the cluster get SOCKS5 reply 0x02 (not allowed
// by ruleset) or HTTP 403, unknown names in the cluster's domain 0x04 (host
// unreachable) or 502.

// SOCKSInfo says how to reach the host-access port (SOCKS5 and HTTP
// CONNECT).
type SOCKSInfo struct {
	// Addr is on 127.0.0.1, with a port chosen by the kernel.
	Addr               netip.AddrPort
	Username, Password string
}

// SOCKS returns the SOCKS5 server's address and credentials, and false if
// it is not running (Config.SOCKS unset).
func (s *Switch) SOCKS() (SOCKSInfo, bool) {
	return s.socksInfo, s.socks != nil
}

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
	cfg := hostproxy.Config{Username: s.cfg.SOCKSUsername, Password: s.cfg.SOCKSPassword, Dial: s.hostDial, Logger: s.cfg.Logger}
	h := &hostAccess{
		mux:   hostproxy.NewMux(ln, func(b byte) bool { return b == hostproxy.SOCKSVersion }, 0),
		socks: &hostproxy.SOCKSServer{Config: cfg},
		http:  &hostproxy.HTTPServer{Config: cfg},
	}
	if err := s.goroutines(3); err != nil {
		ln.Close()
		return err
	}
	s.socks = h
	s.socksInfo = SOCKSInfo{Addr: ln.Addr().(*net.TCPAddr).AddrPort(), Username: s.cfg.SOCKSUsername, Password: s.cfg.SOCKSPassword}
	for name, serve := range map[string]func() error{
		"host access": h.mux.Serve,
		"socks5":      func() error { return h.socks.Serve(h.mux.Matched()) },
		"http proxy":  func() error { return h.http.Serve(h.mux.Other()) },
	} {
		go func() {
			defer s.wg.Done()
			if err := serve(); err != nil {
				s.cfg.Logger.Error(name+" stopped", "err", err)
			}
		}()
	}
	s.cfg.Logger.Info("host access (socks5, http connect) listening", "addr", s.socksInfo.Addr)
	return nil
}

// hostAccess is the host-access port's listener mux and its two servers.
type hostAccess struct {
	mux   *hostproxy.Mux
	socks *hostproxy.SOCKSServer
	http  *hostproxy.HTTPServer
}

func (h *hostAccess) Close() error {
	err := h.mux.Close()
	h.socks.Close()
	h.http.Close()
	return err
}

// hostDial is DialContext with the switch's refusals translated into the
// answers they deserve (hostproxy.ErrNotAllowed: SOCKS5 0x02, HTTP 403).
func (s *Switch) hostDial(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := s.DialContext(ctx, network, address)
	switch {
	case errors.Is(err, ErrNotCluster):
		return nil, fmt.Errorf("%w: %w", hostproxy.ErrNotAllowed, err)
	case errors.Is(err, ErrUnknownHost):
		return nil, fmt.Errorf("%w: %w", syscall.EHOSTUNREACH, err)
	}
	return c, err
}
