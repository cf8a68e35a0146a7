package child

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestStopLadder(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script string
		ask    bool
		want   syscall.Signal // 0: Stop returns nil
	}{
		{"ends on SIGTERM, the request", "sleep 60", false, 0},
		{"ends when asked", "read x", true, 0},
		{"ignores asking, ends on SIGTERM", "sleep 60", true, syscall.SIGTERM},
		{"ignores everything", "trap '' TERM; while :; do sleep 1; done", true, syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("sh", "-c", tc.script)
			opts := Options{Grace: 200 * time.Millisecond}
			var stdin interface{ Close() error }
			if tc.ask {
				w, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				stdin = w
				opts.Ask = func(context.Context) error {
					if tc.script == "read x" {
						return stdin.Close() // EOF ends read
					}
					return nil
				}
			}
			p, err := Start(cmd, opts)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Go(func() { errs[i] = p.Stop() })
			}
			wg.Wait()
			for i, err := range errs {
				var se *StopError
				switch {
				case tc.want == 0 && err != nil:
					t.Errorf("Stop #%d = %v, want nil", i, err)
				case tc.want != 0 && (!errors.As(err, &se) || se.Signal != tc.want):
					t.Errorf("Stop #%d = %v, want a StopError for %v", i, err, tc.want)
				case i > 0 && err != errs[0]:
					t.Errorf("Stop #%d = %v, Stop #0 = %v: want the same", i, err, errs[0])
				}
			}
			if p.Wait() != p.Wait() || p.State() == nil {
				t.Error("Wait differs between calls, or no exit state after Stop")
			}
		})
	}
}

func TestStopAfterExit(t *testing.T) {
	p, err := Start(exec.Command("sh", "-c", "exit 3"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := p.Stop(); err != nil {
		t.Errorf("Stop after exit = %v, want nil", err)
	}
	var ee *exec.ExitError
	if err := p.Wait(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Errorf("Wait = %v, want exit status 3", err)
	}
}

func TestTailKeepsWholeLines(t *testing.T) {
	var tl Tail
	for i := range 2000 {
		fmt.Fprintf(&tl, "line %d\n", i)
	}
	got := tl.String()
	if len(got) > 8<<10 || !strings.HasPrefix(got, "line ") || !strings.HasSuffix(got, "line 1999\n") {
		t.Errorf("tail: %d bytes, starts %q, ends %q", len(got), got[:10], got[len(got)-10:])
	}
}

func TestTail(t *testing.T) {
	tail := &Tail{Max: 16}
	tail.Write([]byte("first line\nsecond\n"))
	tail.Write([]byte("third\n\nfourth"))
	if got := strings.Join(tail.Lines(0), "|"); got != "third|fourth" {
		t.Errorf("Lines = %q, want the lines within the last 16 bytes, whole", got)
	}
	if got := tail.Lines(1); len(got) != 1 || got[0] != "fourth" {
		t.Errorf("Lines(1) = %q", got)
	}
}
