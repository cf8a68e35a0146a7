package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// status prints one line per step in the manner of `kind create cluster`:
// a spinner that turns into ✓ or ✗ on a capable terminal, and plain "•"
// start and "✓"/"✗" end lines elsewhere (CI, pipes, NO_COLOR, TERM=dumb).
// Log lines go through Logf so that they never interleave with a frame.
type status struct {
	mu      sync.Mutex
	w       io.Writer
	fancy   bool
	step    string
	started time.Time
	stop    chan struct{}
	done    chan struct{}
}

func newStatus(w io.Writer, fancy bool) *status { return &status{w: w, fancy: fancy} }

// capableTerminal reports whether f is a terminal that takes spinner frames.
func capableTerminal(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" || os.Getenv("TERM") == "" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

var frames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// Start begins a step. A step still running is ended as failed first: a new
// step never silently marks the previous one done.
func (s *status) Start(step string) {
	s.End(false)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.step, s.started = step, time.Now()
	if !s.fancy {
		fmt.Fprintf(s.w, " • %s ...\n", step)
		return
	}
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.spin(s.stop, s.done)
}

func (s *status) spin(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for i := 0; ; i++ {
		s.mu.Lock()
		fmt.Fprintf(s.w, "\r\x1b[K %s %s (%s)", frames[i%len(frames)], s.step, time.Since(s.started).Round(time.Second))
		s.mu.Unlock()
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// Update changes the running step's text (e.g. "Waiting for nodes (2/3 ready)").
func (s *status) Update(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.step == "" {
		return
	}
	s.step = step
}

// End finishes the running step, if any, with its duration.
func (s *status) End(ok bool) {
	s.mu.Lock()
	step, stop, done := s.step, s.stop, s.done
	s.step, s.stop, s.done = "", nil, nil
	s.mu.Unlock()
	if step == "" {
		return
	}
	if stop != nil {
		close(stop)
		<-done
	}
	mark := "✓"
	if !ok {
		mark = "✗"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fancy {
		fmt.Fprint(s.w, "\r\x1b[K")
	}
	fmt.Fprintf(s.w, " %s %s (%s)\n", mark, step, time.Since(s.started).Round(10*time.Millisecond))
}

// Logf prints a line without breaking a spinner frame.
func (s *status) Logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fancy && s.step != "" {
		fmt.Fprint(s.w, "\r\x1b[K")
	}
	fmt.Fprintf(s.w, format+"\n", args...)
}
