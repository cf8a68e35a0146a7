package qemu

import "sync"

// Subscribers: readers of a console's raw output inside the process (the
// cluster's control API serves them to `cluster console`), beside the
// interactive UNIX socket and with the same rules.

// Subscription is one reader of a console's raw output.
type Subscription struct {
	// History is the last lines the console kept when the subscription
	// began (sanitized, oldest first), then the line being written, if any.
	History []string
	// Output carries the console's raw bytes from then on. It is closed
	// when the console ends (QEMU exited) or on Cancel. A reader that does
	// not keep up loses output rather than slowing the guest down.
	Output <-chan []byte

	c    *Console
	ch   chan []byte
	once sync.Once
	done chan struct{}
}

// Subscribe begins a subscription with up to lines lines of history.
func (c *Console) Subscribe(lines int) *Subscription {
	ch := make(chan []byte, 256)
	c.mu.Lock()
	s := &Subscription{History: c.ring.tail(lines), Output: ch, c: c, ch: ch, done: make(chan struct{})}
	if c.partial != "" {
		s.History = append(s.History, c.partial)
	}
	c.clients[ch] = struct{}{}
	c.mu.Unlock()
	// The console may have ended between its clients being closed and the
	// subscription: close this one then too.
	go func() {
		select {
		case <-c.ended:
			s.Cancel()
		case <-s.done:
		}
	}()
	return s
}

// Cancel ends the subscription and closes Output. It is safe to call more
// than once.
func (s *Subscription) Cancel() {
	s.once.Do(func() { close(s.done) })
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if _, ok := s.c.clients[s.ch]; ok {
		delete(s.c.clients, s.ch)
		close(s.ch)
	}
}
