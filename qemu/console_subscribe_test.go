package qemu

import (
	"bytes"
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readUntil collects a subscription's output until it holds want.
func readUntil(t *testing.T, out <-chan []byte, want string) string {
	t.Helper()
	var got bytes.Buffer
	timeout := time.After(time.Minute)
	for !strings.Contains(got.String(), want) {
		select {
		case p, ok := <-out:
			if !ok {
				t.Fatalf("output closed after %q, want %q", got.String(), want)
			}
			got.Write(p)
		case <-timeout:
			t.Fatalf("got %q, want %q", got.String(), want)
		}
	}
	return got.String()
}

// TestSubscribe: two subscribers see the history and then the same raw
// bytes; input written to the console reaches the guest; a cancelled one
// stops, and the console's end closes the others.
func TestSubscribe(t *testing.T) {
	c := newTestConsole(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c.send(t, "one\ntwo\nthree\nprompt> ")
	if _, err := c.WaitFor(ctx, regexp.MustCompile(`^prompt> $`)); err != nil {
		t.Fatal(err)
	}
	a, b := c.Subscribe(2), c.Subscribe(0)
	if got := strings.Join(a.History, "|"); got != "two|three|prompt> " {
		t.Errorf("history of 2 lines %q", got)
	}
	if got := strings.Join(b.History, "|"); got != "one|two|three|prompt> " {
		t.Errorf("whole history %q", got)
	}
	c.send(t, "\x1b[1mbold\r\n")
	for _, s := range []*Subscription{a, b} {
		if got := readUntil(t, s.Output, "bold\r\n"); got != "\x1b[1mbold\r\n" {
			t.Errorf("raw output %q", got)
		}
	}
	if _, err := c.Write([]byte("ls\r")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c.guest, buf); err != nil || string(buf) != "ls\r" {
		t.Errorf("guest read %q %v", buf, err)
	}

	a.Cancel()
	a.Cancel()
	if _, ok := <-a.Output; ok {
		t.Error("output of a cancelled subscription still open")
	}
	c.send(t, "after\n")
	readUntil(t, b.Output, "after\n")
	c.guest.Close()
	close(c.exited)
	for range b.Output {
	}
	// A subscription that begins after the end closes at once.
	late := c.Subscribe(1)
	for range late.Output {
	}
	if len(late.History) != 1 || late.History[0] != "after" {
		t.Errorf("late history %q", late.History)
	}
}
