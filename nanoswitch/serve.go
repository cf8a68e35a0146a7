package nanoswitch

import (
	"net"
	"sync"
)

// listenerServer runs handle on a goroutine of its own for every connection
// a listener accepts, and on close closes the listener and every connection
// still open, so that the switch can wait for all of those goroutines.
type listenerServer struct {
	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	done  bool
}

// serve starts accepting on ln. The switch's wait group covers the accept
// loop and every handler.
func (s *Switch) serve(ln net.Listener, handle func(net.Conn)) (*listenerServer, error) {
	ls := &listenerServer{ln: ln, conns: map[net.Conn]struct{}{}}
	if err := s.goroutines(1); err != nil {
		ln.Close()
		return nil, err
	}
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			if !ls.track(c) || s.goroutines(1) != nil {
				c.Close()
				continue
			}
			go func() {
				defer s.wg.Done()
				defer ls.untrack(c)
				handle(c)
			}()
		}
	}()
	return ls, nil
}

func (ls *listenerServer) track(c net.Conn) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.done {
		return false
	}
	ls.conns[c] = struct{}{}
	return true
}

func (ls *listenerServer) untrack(c net.Conn) {
	ls.mu.Lock()
	delete(ls.conns, c)
	ls.mu.Unlock()
	c.Close()
}

// close closes the listener and the open connections.
func (ls *listenerServer) close() error {
	ls.mu.Lock()
	ls.done = true
	for c := range ls.conns {
		c.Close()
	}
	ls.mu.Unlock()
	return ls.ln.Close()
}
