package qemu

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kballard/go-shellquote"
)

// Saving and loading a machine's state goes through QEMU's migration: a
// stream to or from a file through an "exec:" URI (QEMU 7.2 has no "file:"
// URI; it came in 8.2). The stream holds every device's state, the
// firmware's flash (the UEFI variables), the TPM's state fetched from swtpm,
// and RAM, unless RAM is in a shared file (Machine.Memory), which the
// x-ignore-shared capability leaves out: then the stream is a few MiB.

// maxBandwidth lifts migration's default limit (128 MiB/s), which would
// throttle a stream to a local file.
const maxBandwidth = 1 << 40 // bytes per second

// SaveState writes the machine's state to path. The guest must be paused
// (QMP().Stop) so that the state and the disks match; it stays paused, and
// Cont resumes it. path must not exist or is replaced.
func (v *VM) SaveState(ctx context.Context, path string) error {
	if err := v.migrate(ctx, "migrate", "exec:cat > "+shellquote.Join(path)); err != nil {
		return fmt.Errorf("save state of %s: %w", v.m.Name, err)
	}
	return nil
}

// LoadState loads a state written by SaveState into a machine started with
// Machine.Incoming, and leaves it paused: Cont runs it.
func (v *VM) LoadState(ctx context.Context, path string) error {
	if !v.m.Incoming {
		return fmt.Errorf("load state of %s: the machine was not started to receive one (Machine.Incoming)", v.m.Name)
	}
	if err := v.migrate(ctx, "migrate-incoming", "exec:cat "+shellquote.Join(path)); err != nil {
		return fmt.Errorf("load state of %s from %s: %w", v.m.Name, path, err)
	}
	return nil
}

// migrate runs a migration, outgoing ("migrate") or incoming
// ("migrate-incoming"), through uri and waits until it has completed.
func (v *VM) migrate(ctx context.Context, command, uri string) error {
	if err := v.migrationSetup(ctx); err != nil {
		return err
	}
	if err := v.qmp.Execute(ctx, command, map[string]any{"uri": uri}, nil); err != nil {
		return err
	}
	if err := v.awaitMigration(ctx); err != nil {
		if command == "migrate" {
			// A stream that did not complete is worthless; stop it.
			_ = v.qmp.Execute(context.Background(), "migrate_cancel", nil, nil)
		}
		return err
	}
	return nil
}

// migrationSetup sets what both ends must agree on: with RAM in a shared
// file, RAM stays out of the stream.
func (v *VM) migrationSetup(ctx context.Context) error {
	if v.qmp == nil {
		return errors.New("not started")
	}
	ignoreShared := v.m.Memory != nil
	caps := []map[string]any{{"capability": "x-ignore-shared", "state": ignoreShared}}
	if err := v.qmp.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return err
	}
	return v.qmp.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}, nil)
}

// awaitMigration polls query-migrate until the migration has completed or
// failed. Events would need the migration-events capability on both ends;
// a poll every few milliseconds costs nothing next to the stream.
func (v *VM) awaitMigration(ctx context.Context) error {
	var st struct {
		Status    string `json:"status"`
		ErrorDesc string `json:"error-desc"`
	}
	interval := time.Millisecond
	for {
		if err := v.qmp.Execute(ctx, "query-migrate", nil, &st); err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			if st.ErrorDesc == "" {
				st.ErrorDesc = "no reason given; QEMU's stderr may say more"
			}
			return fmt.Errorf("migration %s: %s%s", st.Status, st.ErrorDesc, stderrSuffix(v.stderrLines()))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("migration %s: %w", st.Status, ctx.Err())
		case <-v.exited:
			return fmt.Errorf("qemu exited during migration: %s%s", v.exit, stderrSuffix(v.exit.Stderr))
		case <-time.After(interval):
		}
		interval = min(2*interval, 10*time.Millisecond)
	}
}
