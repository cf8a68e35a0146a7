package hostproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Mux splits one listener in two by the first byte each client sends, so
// that two protocols share a port: Matched gets the connections whose first
// byte match accepts, Other the rest. The byte is not consumed: it is read
// again from the connection handed on.
type Mux struct {
	ln      net.Listener
	match   func(first byte) bool
	timeout time.Duration
	a, b    *chanListener

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{}
	wg      sync.WaitGroup
}

// NewMux splits ln by match. timeout bounds the wait for a client's first
// byte (default 30s); a client that sends nothing in time is dropped.
func NewMux(ln net.Listener, match func(first byte) bool, timeout time.Duration) *Mux {
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	return &Mux{ln: ln, match: match, timeout: timeout,
		a: newChanListener(ln.Addr()), b: newChanListener(ln.Addr()), pending: map[net.Conn]struct{}{}}
}

// Matched is the listener of the connections whose first byte matches.
func (m *Mux) Matched() net.Listener { return m.a }

// Other is the listener of the other connections.
func (m *Mux) Other() net.Listener { return m.b }

// Serve accepts on the underlying listener until it is closed (by Close)
// and returns nil then.
func (m *Mux) Serve() error {
	for {
		c, err := m.ln.Accept()
		if err != nil {
			m.mu.Lock()
			closed := m.closed
			m.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			continue
		}
		m.pending[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		// The first byte is awaited on a goroutine per client: a silent
		// client must not hold up the others.
		go func() {
			defer m.wg.Done()
			m.route(c)
		}()
	}
}

func (m *Mux) route(c net.Conn) {
	var first [1]byte
	_ = c.SetReadDeadline(time.Now().Add(m.timeout))
	_, err := io.ReadFull(c, first[:])
	_ = c.SetReadDeadline(time.Time{})
	m.mu.Lock()
	delete(m.pending, c)
	closed := m.closed
	m.mu.Unlock()
	if err != nil || closed {
		c.Close()
		return
	}
	to := m.b
	if m.match(first[0]) {
		to = m.a
	}
	// The first byte is given back before the rest.
	to.push(readerConn{Reader: io.MultiReader(bytes.NewReader(first[:]), c), Conn: c})
}

// Close closes the underlying listener, both halves and the connections
// whose first byte has not come yet, and waits for the goroutines.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	for c := range m.pending {
		c.Close()
	}
	m.mu.Unlock()
	err := m.ln.Close()
	m.a.Close()
	m.b.Close()
	m.wg.Wait()
	return err
}

// chanListener is a net.Listener fed by a Mux.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
