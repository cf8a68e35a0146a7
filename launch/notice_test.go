package main

import (
	"bytes"
	"log/slog"
	"testing"
)

// TestNoticeStyle: log records print as step lines (the TCG notice among
// them), below the level they are filtered out.
func TestNoticeStyle(t *testing.T) {
	var b bytes.Buffer
	st := newStatus(&b, false)
	log := slog.New(newNoticeHandler(st, slog.LevelWarn))
	st.Start("Checking host")
	log.Warn("qemu: kvm unusable (open /dev/kvm: no such file): using TCG")
	log.With("node", "node1").Error("graceful stop failed", "err", "deadline exceeded")
	log.Info("not shown")
	want := " • Checking host ...\n" +
		" ! qemu: kvm unusable (open /dev/kvm: no such file): using TCG\n" +
		" ✗ graceful stop failed node=node1 err=\"deadline exceeded\"\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
