package nanoswitch

import (
	"net"
	"testing"
)

// socketPair returns the two ends of a UNIX stream socketpair, as QEMU's
// stream netdev would give the switch.
func socketPair(tb testing.TB) (net.Conn, net.Conn) {
	tb.Helper()
	f0, f1 := socketPairFiles(tb)
	defer f0.Close()
	defer f1.Close()
	c0, err := net.FileConn(f0)
	if err != nil {
		tb.Fatal(err)
	}
	c1, err := net.FileConn(f1)
	if err != nil {
		tb.Fatal(err)
	}
	return c0, c1
}

// BenchmarkForward measures the switch alone: 1500-byte unicast frames from
// one socketpair port to another, written and read by the benchmark in
// QEMU's framing. Compare its MB/s with the guests' TCP throughput (TCG
// bound, tens of MB/s) to see the switch's share.
func BenchmarkForward(b *testing.B) {
	sw := newTestSwitch(b, Config{Logger: nil})
	attach := func(name string) net.Conn {
		ours, theirs := socketPair(b)
		if err := sw.AttachConn(name, theirs); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { ours.Close() })
		return ours
	}
	src, dst := attach("src"), attach("dst")
	frame := encodeFrame(ethFrame(mac(2), mac(1), string(make([]byte, 1500-ethLen))))
	// Let the switch learn dst, so that frames are unicast, not flooded.
	if _, err := dst.Write(encodeFrame(ethFrame(broadcast, mac(2), "hello"))); err != nil {
		b.Fatal(err)
	}
	fr := newFrameReader(src)
	if _, err := fr.next(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame) - hdrLen))
	// Bursts no larger than a queue, each read before the next is sent:
	// a frame dropped for a full queue would stall the benchmark.
	const burst = 256
	got := make(chan error)
	go func() {
		r := newFrameReader(dst)
		for sent := 0; sent < b.N; sent += burst {
			var err error
			for range min(burst, b.N-sent) {
				if _, err = r.next(); err != nil {
					break
				}
			}
			got <- err
		}
	}()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += burst {
		for range min(burst, b.N-sent) {
			if _, err := src.Write(frame); err != nil {
				b.Fatal(err)
			}
		}
		if err := <-got; err != nil {
			b.Fatal(err)
		}
	}
}
