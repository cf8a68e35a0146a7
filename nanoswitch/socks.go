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

	"github.com/qcluster/qcluster/nanoswitch/socks5"
)

// The SOCKS5 server (package socks5) for tools outside the process: it
// connects through DialContext, so it reaches the cluster's addresses and
// names only. Destinations outside the cluster get reply 0x02 (not allowed
// by ruleset), unknown names in the cluster's domain 0x04 (host
// unreachable).

// SOCKSInfo says how to reach the SOCKS5 server.
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
	srv := &socks5.Server{
		Username: s.cfg.SOCKSUsername,
		Password: s.cfg.SOCKSPassword,
		Dial:     s.socksDial,
		Logger:   s.cfg.Logger,
	}
	if err := s.goroutines(1); err != nil {
		ln.Close()
		return err
	}
	s.socks = srv
	s.socksInfo = SOCKSInfo{Addr: ln.Addr().(*net.TCPAddr).AddrPort(), Username: srv.Username, Password: srv.Password}
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil {
			s.cfg.Logger.Error("socks5 stopped", "err", err)
		}
	}()
	s.cfg.Logger.Info("socks5 listening", "addr", s.socksInfo.Addr)
	return nil
}

// socksDial is DialContext with the switch's refusals translated into the
// replies they deserve.
func (s *Switch) socksDial(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := s.DialContext(ctx, network, address)
	switch {
	case errors.Is(err, ErrNotCluster):
		return nil, fmt.Errorf("%w: %w", socks5.ErrNotAllowed, err)
	case errors.Is(err, ErrUnknownHost):
		return nil, fmt.Errorf("%w: %w", syscall.EHOSTUNREACH, err)
	}
	return c, err
}
