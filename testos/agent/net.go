package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// dhcpDeadline bounds the first DHCP exchange: a node without an address
// cannot serve, so it powers off with the reason instead of waiting forever.
const dhcpDeadline = 2 * time.Minute

// netState is the NIC and its DHCP lease.
type netState struct {
	mu    sync.Mutex
	link  netlink.Link
	addr  netip.Prefix
	lease *nclient4.Lease
}

// findLink brings loopback up and returns the first Ethernet link. virtio_net
// probes while its module loads; it waits up to 10 s for the link anyway.
func findLink(ctx context.Context) (netlink.Link, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("bring lo up: %w", err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("list network links: %w", err)
		}
		var names []string
		for _, l := range links {
			a := l.Attrs()
			names = append(names, a.Name)
			if l.Type() == "device" && a.EncapType == "ether" && len(a.HardwareAddr) == 6 {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("find the NIC: no Ethernet link among %v", names)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// bring sets the link up, gets a DHCP lease and configures address, default
// route and resolv.conf, then keeps renewing the lease in the background.
func (s *netState) bring(ctx context.Context, log *slog.Logger, cfg *config, link netlink.Link) error {
	s.link = link
	name := link.Attrs().Name
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("network: bring %s up: %w", name, err)
	}
	c, err := nclient4.New(name, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return fmt.Errorf("network: dhcp client on %s: %w", name, err)
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptHostName(cfg.hostname)),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionDomainNameServer, dhcpv4.OptionRouter, dhcpv4.OptionSubnetMask,
			dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList),
	}
	dctx, cancel := context.WithTimeout(ctx, dhcpDeadline)
	defer cancel()
	var lease *nclient4.Lease
	for attempt := 1; ; attempt++ {
		lease, err = c.Request(dctx, mods...)
		if err == nil {
			break
		}
		if dctx.Err() != nil {
			c.Close()
			return fmt.Errorf("network: no DHCP lease on %s after %v (%d attempts): %w", name, dhcpDeadline, attempt, err)
		}
		log.Warn("dhcp request failed, retrying", "link", name, "attempt", attempt, "err", err)
	}
	if err := s.apply(cfg, lease); err != nil {
		c.Close()
		return err
	}
	log.Info("dhcp lease", "link", name, "addr", s.addr, "router", lease.ACK.Router(), "dns", lease.ACK.DNS(),
		"lease", lease.ACK.IPAddressLeaseTime(0))
	go s.renew(ctx, log, cfg, c, mods)
	return nil
}

// apply configures the lease on the link.
func (s *netState) apply(cfg *config, lease *nclient4.Lease) error {
	ack := lease.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok {
		return fmt.Errorf("network: DHCP offered no IPv4 address (yiaddr %v)", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		mask = net.CIDRMask(24, 32) // RFC 2131 leaves it to the client; /24 is the common case
	}
	ones, _ := mask.Size()
	prefix := netip.PrefixFrom(ip, ones)
	s.mu.Lock()
	old := s.addr
	s.mu.Unlock()
	if old != prefix {
		if old.IsValid() {
			_ = netlink.AddrDel(s.link, &netlink.Addr{IPNet: prefixIPNet(old)})
		}
		if err := netlink.AddrReplace(s.link, &netlink.Addr{IPNet: prefixIPNet(prefix)}); err != nil {
			return fmt.Errorf("network: add %s to %s: %w", prefix, s.link.Attrs().Name, err)
		}
	}
	if gw := ack.Router(); len(gw) > 0 {
		r := &netlink.Route{LinkIndex: s.link.Attrs().Index, Gw: gw[0], Dst: nil}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("network: default route via %v: %w", gw[0], err)
		}
	}
	if err := writeResolvConf(ack, cfg.domain); err != nil {
		return err
	}
	s.mu.Lock()
	s.addr, s.lease = prefix, lease
	s.mu.Unlock()
	return nil
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// writeResolvConf writes /etc/resolv.conf from the lease.
func writeResolvConf(ack *dhcpv4.DHCPv4, domain string) error {
	var b strings.Builder
	var search []string
	if domain != "" {
		search = append(search, domain)
	}
	if d := ack.DomainName(); d != "" {
		search = append(search, d)
	}
	if l := ack.DomainSearch(); l != nil {
		search = append(search, l.Labels...)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, ns := range ack.DNS() {
		fmt.Fprintf(&b, "nameserver %s\n", ns)
	}
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	if err := atomicfile.WriteDurable("/etc/resolv.conf", []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	return nil
}

// renew keeps the lease: renew at T1 (half the lease by default), start over
// with a new request when renewing fails until the lease ends.
func (s *netState) renew(ctx context.Context, log *slog.Logger, cfg *config, c *nclient4.Client, mods []dhcpv4.Modifier) {
	defer c.Close()
	for {
		s.mu.Lock()
		lease := s.lease
		s.mu.Unlock()
		leaseTime := lease.ACK.IPAddressLeaseTime(time.Hour)
		t1 := lease.ACK.IPAddressRenewalTime(leaseTime / 2)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(lease.CreationTime.Add(t1))):
		}
		expired := false
		for {
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			var next *nclient4.Lease
			var err error
			if expired || time.Now().After(lease.CreationTime.Add(leaseTime)) {
				next, err = c.Request(rctx, mods...)
			} else {
				next, err = c.Renew(rctx, lease, mods...)
			}
			cancel()
			if err == nil {
				if err = s.apply(cfg, next); err == nil {
					break
				}
			}
			if ctx.Err() != nil {
				return
			}
			var nak *nclient4.ErrNak
			if errors.As(err, &nak) {
				expired = true // the server refused the lease: request anew
			}
			log.Warn("dhcp renew failed, retrying", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// primary is the leased address ("" before DHCP).
func (s *netState) primary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.addr.IsValid() {
		return ""
	}
	return s.addr.Addr().String()
}

// addresses lists the node's global unicast addresses in CIDR form.
func addresses() []string {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil
	}
	var out []string
	for _, a := range addrs {
		if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
			continue
		}
		out = append(out, a.IPNet.String())
	}
	return out
}
