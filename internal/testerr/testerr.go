// Package testerr checks errors the way qcluster promises them in tests:
// one line, wrapping the sentinel a caller acts on, naming what was wrong.
package testerr

import (
	"errors"
	"strings"
	"testing"
)

// Want checks that err wraps sentinel (if not nil), is one line, and
// mentions every one of subs.
func Want(t testing.TB, err, sentinel error, subs ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one mentioning %q", subs)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	if sentinel != nil && !errors.Is(err, sentinel) {
		t.Errorf("error %q does not wrap %q", msg, sentinel)
	}
	for _, s := range subs {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
}
