package qemu

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testConsole is a Console over a socketpair; the test writes the guest's
// side. Closing exited (after the far end) plays QEMU's exit.
type testConsole struct {
	*Console
	guest  net.Conn
	exited chan struct{}
}

func newTestConsole(t *testing.T, lines int) testConsole {
	t.Helper()
	ours, theirs, err := socketpair("serial")
	if err != nil {
		t.Fatal(err)
	}
	guest, err := net.FileConn(theirs)
	theirs.Close()
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.OpenFile(filepath.Join(t.TempDir(), "console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	c := newConsole("n0", ours, log, nil, lines, exited, func() Exit { return Exit{Kind: ExitPoweredOff, Reason: "guest-shutdown"} },
		slog.New(slog.DiscardHandler))
	t.Cleanup(func() {
		guest.Close()
		c.wg.Wait()
	})
	return testConsole{Console: c, guest: guest, exited: exited}
}

func (c testConsole) send(t *testing.T, s string) {
	t.Helper()
	if _, err := c.guest.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleWaitFor(t *testing.T) {
	c := newTestConsole(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	c.send(t, "boot 1\r\n\x1b[0mready\r\n")
	if line, err := c.WaitFor(ctx, regexp.MustCompile(`^\^\[\[0mready$`)); err != nil || line != "^[[0mready" {
		t.Fatalf("WaitFor a line already printed = %q, %v", line, err)
	}
	from := c.Cursor()
	if from != 2 {
		t.Errorf("cursor %d, want 2", from)
	}
	got := make(chan string, 1)
	go func() {
		line, err := c.WaitForFrom(ctx, from, regexp.MustCompile(`ready`))
		if err != nil {
			t.Error(err)
		}
		got <- line
	}()
	c.send(t, "boot 2\nready again\n")
	if line := <-got; line != "ready again" {
		t.Errorf("WaitForFrom = %q, want the line after the cursor", line)
	}

	// A prompt without an end of line counts.
	c.send(t, "Shell> ")
	if line, err := c.WaitFor(ctx, regexp.MustCompile(`^Shell> $`)); err != nil || line != "Shell> " {
		t.Errorf("WaitFor a prompt = %q, %v", line, err)
	}

	// The ring holds 3 lines; the log holds all, sanitized.
	if tail := c.Tail(0); strings.Join(tail, "|") != "^[[0mready|boot 2|ready again" {
		t.Errorf("tail %q", tail)
	}

	short, cancelShort := context.WithTimeout(ctx, time.Millisecond)
	defer cancelShort()
	_, err := c.WaitFor(short, regexp.MustCompile("never"))
	var ce *ConsoleError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &ce) || ce.Exit != nil ||
		!strings.Contains(err.Error(), `"ready again"`) || !strings.Contains(err.Error(), c.LogPath()) {
		t.Errorf("WaitFor timing out = %v", err)
	}

	// QEMU exits: the rest of the output is read (and matched) first, then
	// a pending WaitFor returns ErrExited with the exit.
	pending := make(chan error, 1)
	go func() {
		_, err := c.WaitFor(ctx, regexp.MustCompile("never"))
		pending <- err
	}()
	c.send(t, "\nlast words")
	c.guest.Close()
	if line, err := c.WaitFor(ctx, regexp.MustCompile("^last words$")); err != nil || line != "last words" {
		t.Errorf("WaitFor the unterminated last line = %q, %v", line, err)
	}
	close(c.exited)
	err = <-pending
	if !errors.Is(err, ErrExited) || !errors.As(err, &ce) || ce.Exit == nil || ce.Exit.Kind != ExitPoweredOff ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("WaitFor at exit = %v, want a one-line ErrExited with the exit", err)
	}
	c.wg.Wait()
	log, err := os.ReadFile(c.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	if want := "boot 1\n^[[0mready\nboot 2\nready again\nShell> \nlast words\n"; string(log) != want {
		t.Errorf("log %q, want %q", log, want)
	}
}

func TestConsoleWaitForLine(t *testing.T) {
	c := newTestConsole(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if c.Seen(regexp.MustCompile(`panic`)) {
		t.Fatal("Seen before anything was printed")
	}
	// The match comes while the line is still being written; the rest of
	// the line follows.
	c.send(t, "boot\nKernel panic - not syncing")
	got := make(chan string, 1)
	go func() {
		line, err := c.WaitForLine(ctx, regexp.MustCompile(`Kernel panic`))
		if err != nil {
			t.Error(err)
		}
		got <- line
	}()
	for !c.Seen(regexp.MustCompile(`not syncing`)) {
		time.Sleep(time.Millisecond)
	}
	c.send(t, ": Attempted to kill init\nmore\n")
	if line := <-got; line != "Kernel panic - not syncing: Attempted to kill init" {
		t.Errorf("WaitForLine = %q, want the whole line", line)
	}
	if !c.Seen(regexp.MustCompile(`^more$`)) {
		t.Error("Seen misses a line printed")
	}
}
