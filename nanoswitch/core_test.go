package nanoswitch

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// tlog sends the switch's log lines to the test's log.
type tlog struct{ t testing.TB }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newTestSwitch starts a switch that t closes at its end.
func newTestSwitch(t testing.TB, cfg Config) *Switch {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	sw, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sw.Close(); err != nil {
			t.Error(err)
		}
	})
	return sw
}

// peer is the far end of an in-memory port: what a VM would be. A net.Pipe
// does not buffer, so a peer that is not read is a stalled VM.
type peer struct {
	t    testing.TB
	name string
	mac  net.HardwareAddr
	conn net.Conn
	fr   *frameReader
}

func attachPeer(t testing.TB, sw *Switch, name string, mac net.HardwareAddr) *peer {
	t.Helper()
	a, b := net.Pipe()
	if err := sw.AttachConn(name, a); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return &peer{t: t, name: name, mac: mac, conn: b, fr: newFrameReader(b)}
}

var broadcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// testEtherType is the IEEE local experimental EtherType: the gateway's
// stack ignores it.
const testEtherType = 0x88b5

func ethFrame(dst, src net.HardwareAddr, payload string) []byte {
	f := append(append(append([]byte(nil), dst...), src...), testEtherType>>8, testEtherType&0xff)
	return append(f, payload...)
}

func (p *peer) send(dst net.HardwareAddr, payload string) {
	p.t.Helper()
	if _, err := p.conn.Write(encodeFrame(ethFrame(dst, p.mac, payload))); err != nil {
		p.t.Fatalf("%s: send: %v", p.name, err)
	}
}

// recv returns the payload of the next frame the peer gets.
func (p *peer) recv() string {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf, err := p.fr.next()
	if err != nil {
		p.t.Fatalf("%s: recv: %v", p.name, err)
	}
	return string(buf[hdrLen+ethLen:])
}

// expect fails the test unless the peer's next frame carries want; why
// says what another frame would mean.
func (p *peer) expect(want string, why ...string) {
	p.t.Helper()
	if got := p.recv(); got != want {
		p.t.Fatalf("%s got %q, want %q %s", p.name, got, want, strings.Join(why, " "))
	}
}

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0, 0, 0, last} }

func counters(t testing.TB, sw *Switch, name string) Counters {
	t.Helper()
	c, err := sw.Counters(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFloodAndLearn(t *testing.T) {
	sw := newTestSwitch(t, Config{})
	a := attachPeer(t, sw, "a", mac(1))
	b := attachPeer(t, sw, "b", mac(2))
	c := attachPeer(t, sw, "c", mac(3))

	// Unknown unicast is flooded to every other port.
	a.send(mac(9), "to nobody")
	b.expect("to nobody")
	c.expect("to nobody")
	// a is learned now: b's answer goes to a alone. c's next frame is
	// b's broadcast marker, which b sent after the answer.
	b.send(mac(1), "to a")
	b.send(broadcast, "marker")
	a.expect("to a")
	c.expect("marker")
	a.expect("marker")
	ca := counters(t, sw, "a")
	if ca.RxFrames != 1 || ca.TxFrames != 2 || ca.RxBytes != uint64(len(ethFrame(mac(9), mac(1), "to nobody"))) {
		t.Errorf("a counters %+v", ca)
	}
}

func TestStaticMACStays(t *testing.T) {
	sw := newTestSwitch(t, Config{})
	if _, err := sw.AddPort("p", mac(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := sw.AddPort("q", mac(1)); err == nil {
		t.Error("a second port got p's MAC")
	}
	if _, err := sw.AddPort("q", gatewayMAC); err == nil {
		t.Error("a port got the gateway's MAC")
	}
	p := attachPeer(t, sw, "p", mac(1))
	thief := attachPeer(t, sw, "thief", mac(1)) // sends from p's MAC
	other := attachPeer(t, sw, "other", mac(3))
	thief.send(broadcast, "claim")
	p.expect("claim")
	other.expect("claim")
	other.send(mac(1), "for p")
	other.send(broadcast, "marker")
	p.expect("for p")
	thief.expect("marker")
}

// TestStalledPort: a peer that does not read loses its own frames and
// nobody else's.
func TestStalledPort(t *testing.T) {
	const queue, n = 8, 200
	sw := newTestSwitch(t, Config{QueueLength: queue})
	a := attachPeer(t, sw, "a", mac(1))
	b := attachPeer(t, sw, "b", mac(2))
	stalled := attachPeer(t, sw, "stalled", mac(3))
	// One frame at a time, so that b, which reads, never has more than one
	// queued.
	for i := 0; i < n; i++ {
		a.send(broadcast, "x")
		if got := b.recv(); got != "x" {
			t.Fatalf("b frame %d: %q", i, got)
		}
	}
	// b got every frame, so every frame was offered to the stalled port:
	// at most the queue and one batch in its writer were taken.
	cs := counters(t, sw, "stalled")
	if cs.TxDrops < n-queue-maxBatch {
		t.Errorf("stalled port dropped %d of %d frames, want at least %d", cs.TxDrops, n, n-queue-maxBatch)
	}
	if cb := counters(t, sw, "b"); cb.TxDrops != 0 || cb.TxFrames != n {
		t.Errorf("b counters %+v", cb)
	}
	// Once it reads again, it gets what was queued and then new frames.
	got := 0
	for got < n-int(cs.TxDrops) {
		stalled.recv()
		got++
	}
	a.send(broadcast, "after")
	if p := stalled.recv(); p != "after" {
		t.Fatalf("stalled got %q after draining", p)
	}
}

func TestFaults(t *testing.T) {
	sw := newTestSwitch(t, Config{})
	a := attachPeer(t, sw, "a", mac(1))
	b := attachPeer(t, sw, "b", mac(2))
	c := attachPeer(t, sw, "c", mac(3))
	// Learn everyone.
	for _, p := range []*peer{a, b, c} {
		p.send(broadcast, "hello")
		for _, q := range []*peer{a, b, c} {
			if q != p {
				q.recv()
			}
		}
	}
	if err := sw.Partition("a", "b"); err != nil {
		t.Fatal(err)
	}
	a.send(mac(2), "blocked")
	a.send(mac(3), "to c")
	a.send(broadcast, "bcast")
	c.expect("to c")
	c.expect("bcast")
	c.send(mac(2), "marker")
	b.expect("marker", "the partition let a frame through")
	if fd := counters(t, sw, "b").FaultDrops; fd != 2 {
		t.Errorf("b fault drops %d, want 2", fd)
	}

	sw.Heal()
	if st := sw.Faults(); len(st.Partitions) != 0 {
		t.Fatalf("faults after heal: %+v", st)
	}
	a.send(mac(2), "healed")
	b.expect("healed")

	// Isolation cuts a from the VM ports but not from the gateway.
	if err := sw.Isolate("a"); err != nil {
		t.Fatal(err)
	}
	a.send(broadcast, "isolated")
	c.send(broadcast, "marker2")
	b.expect("marker2", "isolation let a frame through")
	if drop, _ := sw.faults.Load().verdict("a", GatewayPort); drop {
		t.Error("isolation cut a from the gateway")
	}
	sw.Heal()

	// Full loss drops everything; a delay holds frames back.
	if err := sw.Degrade("b", Degradation{LossPercent: 100}); err != nil {
		t.Fatal(err)
	}
	a.send(mac(2), "lost")
	if err := sw.Degrade("b", Degradation{Delay: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.send(mac(2), "late")
	b.expect("late")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("delayed frame arrived after %s, before its 50ms delay", d)
	}
	if st := sw.Faults(); st.Degraded["b"].Delay != 50*time.Millisecond {
		t.Errorf("faults: %+v", st)
	}

	for _, err := range []error{
		sw.Partition("a", "nope"), sw.Isolate("nope"), sw.Degrade("nope", Degradation{LossPercent: 1}),
	} {
		if !errors.Is(err, ErrNoPort) {
			t.Errorf("fault on a missing port: %v, want ErrNoPort", err)
		}
	}
	for _, err := range []error{
		sw.Partition("a", "a"), sw.Isolate(GatewayPort),
		sw.Degrade("a", Degradation{LossPercent: 101}), sw.Degrade("a", Degradation{Delay: -1}),
	} {
		if err == nil {
			t.Error("bad fault accepted")
		}
	}
}

func TestReattach(t *testing.T) {
	sw := newTestSwitch(t, Config{})
	a := attachPeer(t, sw, "a", mac(1))
	old := attachPeer(t, sw, "b", mac(2))
	b := attachPeer(t, sw, "b", mac(2)) // the VM restarted
	_ = old.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := old.fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("old connection: %v, want EOF", err)
	}
	a.send(mac(2), "to new b")
	b.expect("to new b")
	if n := counters(t, sw, "b").Connects; n != 2 {
		t.Errorf("connects %d, want 2", n)
	}
}

func TestMalformedFrame(t *testing.T) {
	sw := newTestSwitch(t, Config{})
	a := attachPeer(t, sw, "a", mac(1))
	b := attachPeer(t, sw, "b", mac(2))
	if _, err := a.conn.Write(encodeFrame([]byte{1, 2, 3})); err != nil {
		t.Fatal(err)
	}
	a.send(broadcast, "ok")
	b.expect("ok")
	if c := counters(t, sw, "a"); c.RxDrops != 1 || c.RxFrames != 2 {
		t.Errorf("a counters %+v", c)
	}
	// A length beyond the maximum ends the connection.
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], MaxFrameSize+1)
	if _, err := a.conn.Write(hdr[:]); err != nil {
		t.Fatal(err)
	}
	_ = a.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := a.fr.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after a bad length: %v, want the connection closed", err)
	}
}

func TestClose(t *testing.T) {
	sw, err := New(context.Background(), Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	dir := sw.Dir()
	path, err := sw.AddPort("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	// Attached or still in the listener's backlog, the peer's connection
	// ends (EOF or reset).
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("peer connection still open after Close")
	}
	if _, err := net.Dial("unix", path); err == nil {
		t.Error("socket still accepts after Close")
	}
	if _, err := sw.AddPort("b", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("AddPort after Close: %v", err)
	}
	if _, err := sw.DialContext(context.Background(), "tcp", "10.42.0.10:1"); !errors.Is(err, ErrClosed) {
		t.Errorf("DialContext after Close: %v", err)
	}
	if err := sw.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary dir %s left behind", dir)
	}
}
