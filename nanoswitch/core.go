package nanoswitch

import "net"

// The forwarding core: a learning bridge. Every frame a port receives is
// handed to forward on that port's reader goroutine; forward never blocks:
// it puts the frame on the destination ports' bounded queues, or drops it
// and counts the drop. So a peer that stops reading (a VM under SIGSTOP)
// costs only its own frames.

type macKey [6]byte

func keyOf(mac net.HardwareAddr) (k macKey) {
	copy(k[:], mac)
	return k
}

// macEntry is where a MAC was seen. Static entries (the gateway, the MACs
// given to AddPort) never move, so a guest cannot take another's address
// over by sending frames from it.
type macEntry struct {
	p      *port
	static bool
}

// learn records that src sends from mac.
func (s *Switch) learn(mac macKey, src *port) {
	s.macMu.RLock()
	e, ok := s.macs[mac]
	s.macMu.RUnlock()
	if ok && (e.p == src || e.static) {
		return
	}
	s.macMu.Lock()
	if e, ok := s.macs[mac]; !ok || !e.static {
		s.macs[mac] = macEntry{p: src}
	}
	s.macMu.Unlock()
}

// lookup returns the port a unicast MAC was learned on, or nil.
func (s *Switch) lookup(mac macKey) *port {
	s.macMu.RLock()
	defer s.macMu.RUnlock()
	return s.macs[mac].p
}

// forward switches one frame (length prefix included) that arrived on src:
// to the port its destination MAC was learned on, or, for broadcast,
// multicast and unknown unicast, to every other port. The buffer is shared
// by all destinations and must not change afterwards.
func (s *Switch) forward(src *port, buf []byte) {
	if len(buf) < hdrLen+ethLen {
		src.c.rxDrops.Add(1)
		return
	}
	dst := macKey(buf[hdrLen : hdrLen+6])
	from := macKey(buf[hdrLen+6 : hdrLen+12])
	if from[0]&1 == 0 { // a multicast source address is bogus: do not learn it
		s.learn(from, src)
	}
	faults := s.faults.Load()
	if dst[0]&1 == 0 {
		if p := s.lookup(dst); p != nil {
			if p != src {
				s.deliver(faults, src, p, buf)
			}
			return
		}
	}
	for _, p := range *s.ports.Load() {
		if p != src {
			s.deliver(faults, src, p, buf)
		}
	}
}

// deliver queues a frame from src on dst, subject to the faults in force.
func (s *Switch) deliver(faults *faultTable, src, dst *port, buf []byte) {
	// The gateway's stack is a host on the segment: like a NIC, it takes
	// only frames for its own MAC, broadcast and multicast.
	if dst.gw && buf[hdrLen]&1 == 0 && macKey(buf[hdrLen:hdrLen+6]) != s.gwMAC {
		return
	}
	drop, delay := faults.verdict(src.name, dst.name)
	if drop {
		dst.c.faultDrops.Add(1)
		return
	}
	dst.enqueue(buf, delay)
}
