package qemu

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ErrExited is wrapped by a ConsoleError when QEMU exited before the
// console showed what was waited for.
var ErrExited = errors.New("qemu exited")

// Cursor is a position in a console's output: the number of complete lines
// before it.
type Cursor uint64

// Console is a machine's serial port (ttyS0) as the supervisor reads it:
// line by line into a log file and a ring of the last lines, matched against
// waiters, and optionally fanned out raw to interactive clients on a UNIX
// socket.
type Console struct {
	name    string
	logPath string
	serial  net.Conn        // the supervisor's end of the serial socket
	exited  <-chan struct{} // the VM's
	exit    func() Exit     // valid once exited is closed
	ended   chan struct{}   // closed when the serial stream ended

	mu      sync.Mutex
	ring    lineRing
	seq     Cursor // complete lines seen
	partial string // the incomplete last line, sanitized
	waiters map[*waiter]struct{}
	clients map[chan []byte]struct{}
	ln      net.Listener // interactive socket, or nil
	conns   map[net.Conn]struct{}

	wg sync.WaitGroup // the reader, the acceptor and client goroutines
}

type waiter struct {
	re    *regexp.Regexp
	from  Cursor
	match chan string // buffered 1
}

// newConsole starts reading serial into log (and serving ln, if not nil).
// exited and exit are the VM's: WaitFor reports how QEMU ended.
func newConsole(name string, serial net.Conn, log *os.File, ln net.Listener, lines int,
	exited <-chan struct{}, exit func() Exit, logger *slog.Logger) *Console {
	c := &Console{name: name, logPath: log.Name(), serial: serial, exited: exited, exit: exit,
		ended: make(chan struct{}), ring: newLineRing(lines), ln: ln,
		waiters: map[*waiter]struct{}{}, clients: map[chan []byte]struct{}{}, conns: map[net.Conn]struct{}{}}
	c.wg.Add(1)
	go c.read(log, logger)
	if ln != nil {
		c.wg.Add(1)
		go c.serve(ln, logger)
	}
	return c
}

// LogPath is the file that holds the console's output, one sanitized line at
// a time, appended across restarts of the machine.
func (c *Console) LogPath() string { return c.logPath }

// Tail returns the last n lines (at most the ring's size; all for n <= 0),
// oldest first.
func (c *Console) Tail(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ring.tail(n)
}

// Cursor returns the position of the next line, for WaitForFrom: take it
// before an action, then wait for its effect.
func (c *Console) Cursor() Cursor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// Write sends p to the guest's serial input.
func (c *Console) Write(p []byte) (int, error) { return c.serial.Write(p) }

// WaitFor waits until a console line since QEMU started matches re, and
// returns it; see WaitForFrom.
func (c *Console) WaitFor(ctx context.Context, re *regexp.Regexp) (string, error) {
	return c.WaitForFrom(ctx, 0, re)
}

// WaitForFrom waits until a console line at or after from matches re, and
// returns that line. Lines already seen count if the ring still holds them;
// the line being written (no end of line yet, such as a prompt) counts too.
// It returns early with a *ConsoleError when ctx ends or when QEMU exits
// (wrapping ErrExited), after the console's last bytes were read.
func (c *Console) WaitForFrom(ctx context.Context, from Cursor, re *regexp.Regexp) (string, error) {
	w := &waiter{re: re, from: from, match: make(chan string, 1)}
	c.mu.Lock()
	if line, ok := c.scanLocked(w); ok {
		c.mu.Unlock()
		return line, nil
	}
	c.waiters[w] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, w)
		c.mu.Unlock()
	}()
	select {
	case line := <-w.match:
		return line, nil
	case <-ctx.Done():
		return "", c.errorf(re, nil, ctx.Err())
	case <-c.ended:
	}
	select {
	case line := <-w.match:
		return line, nil
	default:
	}
	// The stream ends as QEMU exits: wait for its exit to say how.
	select {
	case <-c.exited:
		e := c.exit()
		return "", c.errorf(re, &e, ErrExited)
	case <-ctx.Done():
		return "", c.errorf(re, nil, ctx.Err())
	}
}

// WaitForLine is WaitFor, but returns the whole line: a match can come
// while its line is still being written ("Kernel panic - not syncing" before
// ": Attempted to kill init"). Once matched it waits at most lineGrace for
// the line to end, and returns what there is then.
func (c *Console) WaitForLine(ctx context.Context, re *regexp.Regexp) (string, error) {
	partial, err := c.WaitFor(ctx, re)
	if err != nil {
		return "", err
	}
	partial = strings.TrimSpace(partial)
	next := c.Cursor() + 1 // a line after the one being written
	ctx, cancel := context.WithTimeout(ctx, lineGrace)
	defer cancel()
	_, _ = c.WaitForFrom(ctx, next, anyLine)
	tail := c.Tail(0)
	for i := len(tail) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(tail[i]); strings.HasPrefix(l, partial) {
			return l, nil
		}
	}
	return partial, nil
}

// lineGrace is how long WaitForLine waits for a matched line to end.
const lineGrace = 500 * time.Millisecond

var anyLine = regexp.MustCompile(`.`)

// Seen reports whether a console line so far (the one being written
// included) matches re, without waiting.
func (c *Console) Seen(re *regexp.Regexp) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.scanLocked(&waiter{re: re})
	return ok
}

// scanLocked looks for w's match among the lines held, the partial one last.
func (c *Console) scanLocked(w *waiter) (string, bool) {
	held := c.ring.tail(0)
	first := c.seq - Cursor(len(held))
	for i, line := range held {
		if first+Cursor(i) >= w.from && w.re.MatchString(line) {
			return line, true
		}
	}
	if c.partial != "" && c.seq >= w.from && w.re.MatchString(c.partial) {
		return c.partial, true
	}
	return "", false
}

// ConsoleError is WaitFor's error: what was waited for, why it ended, the
// last console lines and where the whole log is.
type ConsoleError struct {
	Machine string
	Pattern string
	Exit    *Exit    // how QEMU ended, if it did
	Tail    []string // the last console lines
	Log     string   // the console log file
	Err     error    // ErrExited or the context's error
}

func (e *ConsoleError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: wait for console %q: %v", e.Machine, e.Pattern, e.Err)
	if e.Exit != nil {
		fmt.Fprintf(&b, " (%s)", e.Exit)
	}
	tail := e.Tail
	if len(tail) > 5 {
		tail = tail[len(tail)-5:]
	}
	if len(tail) > 0 {
		b.WriteString(": last console lines: ")
		for i, l := range tail {
			if i > 0 {
				b.WriteString(" | ")
			}
			fmt.Fprintf(&b, "%q", l)
		}
	}
	fmt.Fprintf(&b, ": log %s", e.Log)
	return b.String()
}

func (e *ConsoleError) Unwrap() error { return e.Err }

func (c *Console) errorf(re *regexp.Regexp, exit *Exit, err error) error {
	return &ConsoleError{Machine: c.name, Pattern: re.String(), Exit: exit, Tail: c.Tail(20), Log: c.logPath, Err: err}
}

// read runs until the serial stream ends: it logs, keeps and matches lines
// and feeds interactive clients. It closes the log and the stream.
func (c *Console) read(log *os.File, logger *slog.Logger) {
	defer c.wg.Done()
	bw := bufio.NewWriter(log)
	var split lineSplitter
	buf := make([]byte, 32<<10)
	for {
		n, err := c.serial.Read(buf)
		if n > 0 {
			c.fanOut(buf[:n])
			c.mu.Lock()
			split.write(buf[:n], func(raw []byte) { c.lineLocked(sanitize(raw), bw) })
			c.partial = sanitize(split.partial)
			c.matchLocked(c.partial, c.seq)
			c.mu.Unlock()
			if err := bw.Flush(); err != nil {
				logger.Warn("qemu: write console log", "machine", c.name, "err", err)
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				logger.Warn("qemu: read serial console", "machine", c.name, "err", err)
			}
			break
		}
	}
	c.mu.Lock()
	if len(split.partial) > 0 {
		c.lineLocked(sanitize(split.partial), bw)
	}
	c.partial = ""
	c.mu.Unlock()
	if err := bw.Flush(); err != nil {
		logger.Warn("qemu: write console log", "machine", c.name, "err", err)
	}
	if err := log.Close(); err != nil {
		logger.Warn("qemu: close console log", "machine", c.name, "err", err)
	}
	c.serial.Close()
	c.stopClients()
	close(c.ended)
}

func (c *Console) lineLocked(line string, log io.Writer) {
	// Errors surface at the next Flush.
	io.WriteString(log, line)
	io.WriteString(log, "\n")
	c.ring.add(line)
	c.matchLocked(line, c.seq)
	c.seq++
}

func (c *Console) matchLocked(line string, at Cursor) {
	if line == "" {
		return
	}
	for w := range c.waiters {
		if at >= w.from && w.re.MatchString(line) {
			w.match <- line
			delete(c.waiters, w)
		}
	}
}

// serve accepts interactive clients on ln until it is closed. Each client
// gets the raw output from its connection on and its input goes to the
// guest; a client that does not keep up loses output rather than slowing
// the guest down.
func (c *Console) serve(ln net.Listener, logger *slog.Logger) {
	defer c.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logger.Warn("qemu: accept console client", "machine", c.name, "err", err)
			}
			return
		}
		out := make(chan []byte, 256)
		c.mu.Lock()
		if c.ln == nil { // the console has ended
			c.mu.Unlock()
			conn.Close()
			return
		}
		c.clients[out] = struct{}{}
		c.conns[conn] = struct{}{}
		c.mu.Unlock()
		c.wg.Add(2)
		go func() { // output
			defer c.wg.Done()
			for p := range out {
				if _, err := conn.Write(p); err != nil {
					break
				}
			}
			conn.Close()
		}()
		go func() { // input
			defer c.wg.Done()
			io.Copy(c.serial, conn)
			c.mu.Lock()
			if _, ok := c.clients[out]; ok {
				delete(c.clients, out)
				close(out)
			}
			delete(c.conns, conn)
			c.mu.Unlock()
			conn.Close()
		}()
	}
}

func (c *Console) fanOut(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.clients) == 0 {
		return
	}
	cp := append([]byte(nil), p...)
	for out := range c.clients {
		select {
		case out <- cp:
		default:
		}
	}
}

// stopClients closes the interactive socket and its clients.
func (c *Console) stopClients() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for out := range c.clients {
		close(out)
	}
	clear(c.clients)
	for conn := range c.conns {
		conn.Close()
	}
}
