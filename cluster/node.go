package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/qcluster/qcluster/qemu"
	"github.com/qcluster/qcluster/swtpm"
)

// State is where a node is in its life.
type State int

const (
	StatePending State = iota // planned, not started
	StateBooting              // QEMU started, not ready yet
	StateReady                // passed its readiness probe
	StateStopped              // stopped on purpose (Stop, Kill)
	StateFailed               // failed to come up, or exited unasked
)

func (s State) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateBooting:
		return "booting"
	case StateReady:
		return "ready"
	case StateStopped:
		return "stopped"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Timings of a node's last start, each measured from the start of Launch
// (or of Start/Reboot for a restart).
type Timings struct {
	DiskReady   time.Duration // its disk was synthesized (or copied, for a restore)
	QEMUStarted time.Duration // QEMU was executed
	// For a restore, since QEMU started: the saved state was loaded, and
	// the node resumed (zero for a boot).
	StateLoaded, Resumed time.Duration
	Ready                time.Duration // it passed its readiness probe, since QEMU started
}

// Node is one VM of the cluster.
type Node struct {
	*NodePlan
	// Dir is the node's state directory: disk.raw, vars.fd, tpm/, parameters.
	Dir string
	// SerialLog is the serial console's log; CommandLineFile the QEMU
	// command line as a shell script (both appended to across restarts).
	SerialLog, CommandLineFile string
	// EKCertificate is the DER certificate of the TPM's RSA endorsement key
	// (nil without a TPM), issued by the cluster's TPM CA (TPMCA).
	EKCertificate []byte

	c        *Cluster
	disk     string
	vars     string
	params   string // fw_cfg parameters file, "" for none
	tpmState string // "" without a TPM
	tpmSock  string
	netSock  string
	// ram is the guest RAM file: the node's own, shared (what a snapshot
	// keeps), or for a restore the snapshot's, mapped copy-on-write.
	ram       string
	ramShared bool
	incoming  string // the state to load at the next start ("" boots)
	fixup     bool   // restored, and the profile's AfterRestore has not run

	mu      sync.Mutex
	state   State
	t0      time.Time // reference for Timings
	timings Timings
	vm      *qemu.VM
	tpm     *swtpm.TPM
	// lifecycle serializes Start, Stop, Reboot and Kill of this node.
	lifecycle sync.Mutex
}

// State returns the node's state now.
func (n *Node) State() State {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == StateReady || n.state == StateBooting {
		if n.vm != nil {
			select {
			case <-n.vm.Exited():
				return StateFailed
			default:
			}
		}
	}
	return n.state
}

// Timings returns the node's timings of its last start.
func (n *Node) Timings() Timings {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.timings
}

// VM returns the node's running QEMU (nil when stopped), for its console
// and QMP monitor.
func (n *Node) VM() *qemu.VM {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.vm
}

// ConsoleTail returns the last lines of the node's serial console.
func (n *Node) ConsoleTail(lines int) []string {
	if vm := n.VM(); vm != nil && vm.Console() != nil {
		return vm.Console().Tail(lines)
	}
	return nil
}

func (n *Node) processes() (*qemu.VM, *swtpm.TPM) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.vm, n.tpm
}

func (n *Node) setState(s State) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state = s
}

func (n *Node) setReady() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.state = StateReady
	if n.vm != nil {
		n.timings.Ready = time.Since(n.vm.StartedAt())
	}
}

// fail marks the node failed and wraps err with its name and console tail.
func (n *Node) fail(err error) error {
	n.setState(StateFailed)
	ne := &NodeError{Node: n.Name, Err: err, SerialLog: n.SerialLog, ConsoleTail: n.ConsoleTail(consoleTailLines)}
	var ce *qemu.ConsoleError
	if errors.As(err, &ce) && len(ce.Tail) > 0 {
		ne.ConsoleTail = ce.Tail
	}
	return ne
}

// consoleSeen reports whether any console line so far matches re.
func (n *Node) consoleSeen(re *regexp.Regexp) bool {
	vm := n.VM()
	return vm != nil && vm.Console() != nil && vm.Console().Seen(re)
}

// start starts the node's swtpm (if any) and QEMU. ctx bounds start-up only.
func (n *Node) start(ctx context.Context) error {
	c := n.c
	n.mu.Lock()
	n.t0 = time.Now()
	n.mu.Unlock()
	incoming := n.incoming != ""
	if n.ramShared && !incoming {
		// A boot starts from zeroed RAM, not from the last run's.
		if err := os.Remove(n.ram); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove old RAM file: %w", err)
		}
	}
	var tpm *swtpm.TPM
	if n.tpmState != "" {
		var err error
		tpm, err = swtpm.Start(ctx, swtpm.Options{
			Binary:     c.host.swtpm,
			StateDir:   n.tpmState,
			CtrlSocket: n.tpmSock,
			LogFile:    filepath.Join(c.LogDir, n.Name+".swtpm.log"),
			Logger:     c.opts.Logger.With("node", n.Name),
			Incoming:   incoming,
		})
		if err != nil {
			return fmt.Errorf("start swtpm: %w", err)
		}
	}
	m := qemu.Machine{
		Name:      n.Name,
		CPUs:      n.Options.CPUs,
		MemoryMiB: n.Options.MemoryMiB,
		Accel:     qemu.Accel(c.Accel),
		Firmware:  c.host.ovmf.Firmware(n.vars),
		Disks:     []qemu.Disk{{Path: n.disk}},
		NICs:      []qemu.NIC{{MAC: n.MAC, Stream: n.netSock}},
		ExtraArgs: n.Options.ExtraQEMUArgs,
		Memory:    &qemu.MemoryFile{Path: n.ram, Shared: n.ramShared},
		Incoming:  incoming,
	}
	if tpm != nil {
		m.TPM = &qemu.TPM{CtrlSocket: n.tpmSock}
	}
	if n.params != "" {
		m.FwCfg = []qemu.FwCfgFile{{Name: "opt/qcluster/parameters", File: n.params}}
	}
	vm, err := qemu.New(m, qemu.Options{
		QEMU:          c.host.qemu,
		Dir:           filepath.Join(c.LogDir, n.Name),
		ConsoleSocket: filepath.Join(c.sockDir, n.Name+".console"),
		StopTimeout:   2 * time.Second,
		Logger:        c.opts.Logger.With("node", n.Name),
	})
	if err == nil {
		err = vm.Start(ctx)
	}
	if err != nil {
		if tpm != nil {
			tpm.Close()
		}
		return fmt.Errorf("start QEMU: %w", err)
	}
	n.mu.Lock()
	n.vm, n.tpm, n.state = vm, tpm, StateBooting
	n.timings.QEMUStarted = vm.StartedAt().Sub(n.t0)
	n.mu.Unlock()
	return nil
}

// halt kills the node's QEMU and swtpm at once and waits for them.
func (n *Node) halt() error {
	n.mu.Lock()
	vm, tpm := n.vm, n.tpm
	n.vm, n.tpm = nil, nil
	n.mu.Unlock()
	n.c.dropConns(n.Index)
	var errs []error
	if vm != nil {
		// QMP quit: QEMU stops at once without asking the guest; the disk
		// is ours and throw-away.
		if err := vm.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: stop QEMU: %w", n.Name, err))
		}
	}
	if tpm != nil {
		select {
		case <-tpm.Exited(): // --terminate: it ends with QEMU's connection
		case <-time.After(time.Second):
		}
		tpm.Close()
	}
	return errors.Join(errs...)
}
