package nanoswitch

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type portCounters struct {
	rxFrames, rxBytes, txFrames, txBytes   atomic.Uint64
	rxDrops, txDrops, faultDrops, connects atomic.Uint64
}

func (c *portCounters) snapshot() Counters {
	return Counters{
		RxFrames: c.rxFrames.Load(), RxBytes: c.rxBytes.Load(),
		TxFrames: c.txFrames.Load(), TxBytes: c.txBytes.Load(),
		RxDrops: c.rxDrops.Load(), TxDrops: c.txDrops.Load(),
		FaultDrops: c.faultDrops.Load(), Connects: c.connects.Load(),
	}
}

// port is one attachment point of the switch. It outlives the connections
// of its peer: a VM that restarts connects to the same socket again and gets
// the same port, counters and capture file.
type port struct {
	sw   *Switch
	name string
	mac  net.HardwareAddr // fixed in the MAC table; nil: learned
	path string           // UNIX socket path, "" if none
	ln   net.Listener     // listener on path, nil if none
	gw   bool             // the gateway's port

	cur  atomic.Pointer[link] // the peer attached now, nil if none
	pcap *pcapWriter          // nil without capture
	c    portCounters
}

// qframe is a frame waiting in a port's queue: length prefix and frame, and
// the earliest time it may be written (zero: at once).
type qframe struct {
	buf []byte
	due time.Time
}

// link is one connection of a port's peer. Its writer goroutine drains the
// bounded queue; the forwarding core never blocks on it.
type link struct {
	p    *port
	conn net.Conn                  // the peer's connection; nil for the gateway
	sink func(bufs [][]byte) error // where frames go: the connection or the gateway's stack
	q    chan qframe
	done chan struct{} // closed by close
	// stopped is closed when the writer goroutine has returned: after that
	// the sink is not called again.
	stopped chan struct{}
	once    sync.Once
}

// close detaches the link: its goroutines end, its connection is closed and
// frames still queued are dropped.
func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		if l.conn != nil {
			_ = l.conn.Close()
		}
		l.p.cur.CompareAndSwap(l, nil)
	})
}

// attach makes conn the port's peer, replacing (and closing) the previous
// one, and starts its reader and writer.
func (p *port) attach(conn net.Conn) error {
	var scratch net.Buffers
	return p.attachLink(conn, func(bufs [][]byte) error {
		// WriteTo consumes the slice it is given: hand it a copy.
		scratch = append(scratch[:0], bufs...)
		_, err := scratch.WriteTo(conn) // one writev on UNIX sockets
		return err
	})
}

// attachLink attaches a peer: conn (read by a reader goroutine) if it is not
// nil, and sink, which the writer goroutine hands queued frames to.
func (p *port) attachLink(conn net.Conn, sink func(bufs [][]byte) error) error {
	l := &link{
		p:       p,
		conn:    conn,
		sink:    sink,
		q:       make(chan qframe, p.sw.cfg.QueueLength),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	n := 1
	if conn != nil {
		n = 2
	}
	// Registered and made current under the switch's lock, so that Close
	// either refuses it or finds it to close.
	p.sw.mu.Lock()
	if p.sw.closed {
		p.sw.mu.Unlock()
		return ErrClosed
	}
	p.sw.wg.Add(n)
	old := p.cur.Swap(l)
	p.sw.mu.Unlock()
	if old != nil {
		p.sw.cfg.Logger.Warn("port peer replaced by a new connection", "port", p.name)
		old.close()
	}
	p.c.connects.Add(1)
	p.sw.cfg.Logger.Debug("port attached", "port", p.name)
	if conn != nil {
		go l.readLoop()
	}
	go l.writeLoop()
	return nil
}

// readLoop forwards the frames the peer sends until its connection ends.
func (l *link) readLoop() {
	defer l.p.sw.wg.Done()
	defer l.close()
	fr := newFrameReader(l.conn)
	for {
		buf, err := fr.next()
		if err != nil {
			select {
			case <-l.done:
			default:
				if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
					l.p.sw.cfg.Logger.Info("port peer went away", "port", l.p.name)
				} else {
					l.p.sw.cfg.Logger.Warn("port read failed, detaching", "port", l.p.name, "err", err)
				}
			}
			return
		}
		l.p.received(buf)
	}
}

// received accounts for and forwards one frame from the port's peer.
func (p *port) received(buf []byte) {
	p.c.rxFrames.Add(1)
	p.c.rxBytes.Add(uint64(len(buf) - hdrLen))
	if p.pcap != nil {
		p.pcap.write(buf[hdrLen:])
	}
	p.sw.forward(p, buf)
}

// maxBatch is the most frames the writer hands to one writev.
const maxBatch = 64

// writeLoop writes queued frames to the peer, several per system call when
// they are waiting, each no earlier than its due time.
func (l *link) writeLoop() {
	defer l.p.sw.wg.Done()
	defer close(l.stopped)
	var (
		held  *qframe // a frame taken from the queue but not yet due
		batch [][]byte
		timer *time.Timer
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var f qframe
		if held != nil {
			f, held = *held, nil
		} else {
			select {
			case <-l.done:
				return
			case f = <-l.q:
			}
		}
		if d := time.Until(f.due); !f.due.IsZero() && d > 0 {
			if timer == nil {
				timer = time.NewTimer(d)
			} else {
				timer.Reset(d)
			}
			select {
			case <-l.done:
				return
			case <-timer.C:
			}
		}
		batch = append(batch[:0], f.buf)
	gather:
		for len(batch) < maxBatch {
			select {
			case g := <-l.q:
				if !g.due.IsZero() && time.Until(g.due) > 0 {
					held = &g
					break gather
				}
				batch = append(batch, g.buf)
			default:
				break gather
			}
		}
		// Counted (and captured) before the write, so that the counters
		// never lag behind what the peer has seen.
		for _, b := range batch {
			l.p.c.txFrames.Add(1)
			l.p.c.txBytes.Add(uint64(len(b) - hdrLen))
			if l.p.pcap != nil {
				l.p.pcap.write(b[hdrLen:])
			}
		}
		if err := l.sink(batch); err != nil {
			select {
			case <-l.done:
			default:
				l.p.sw.cfg.Logger.Debug("port write failed, detaching", "port", l.p.name, "err", err)
			}
			l.close()
			return
		}
		clear(batch) // let the frames go
	}
}

// enqueue hands a frame to the port's writer without waiting; it counts a
// drop if the queue is full or no peer is attached.
func (p *port) enqueue(buf []byte, delay time.Duration) {
	l := p.cur.Load()
	if l == nil {
		p.c.txDrops.Add(1)
		return
	}
	f := qframe{buf: buf}
	if delay > 0 {
		f.due = time.Now().Add(delay)
	}
	select {
	case l.q <- f:
	default:
		p.c.txDrops.Add(1)
	}
}

func (p *port) status() PortStatus {
	return PortStatus{
		Name:       p.name,
		MAC:        p.mac,
		SocketPath: p.path,
		Connected:  p.cur.Load() != nil,
		Counters:   p.c.snapshot(),
	}
}
