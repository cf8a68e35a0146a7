package qemu

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Accel is a QEMU accelerator choice.
type Accel string

const (
	// AccelAuto takes KVM where it is usable and TCG elsewhere (see DetectAccel).
	AccelAuto Accel = "auto"
	// AccelKVM insists on KVM: Start fails where it is not usable.
	AccelKVM Accel = "kvm"
	// AccelTCG is QEMU's software emulation; always available.
	AccelTCG Accel = "tcg"
)

// ErrNoKVM is wrapped by the error for an explicit AccelKVM where KVM is not usable.
var ErrNoKVM = errors.New("kvm not usable")

// AccelChoice is the outcome of DetectAccel.
type AccelChoice struct {
	// Accel is AccelKVM or AccelTCG.
	Accel Accel
	// Notice is one line saying why AccelAuto fell back to TCG; empty otherwise.
	Notice string
}

// accelProbe looks at the host; its paths are fields so that tests can point
// them at fakes.
type accelProbe struct {
	kvm     string // the KVM device, /dev/kvm
	cpuinfo string // /proc/cpuinfo
}

var hostProbe = accelProbe{kvm: "/dev/kvm", cpuinfo: "/proc/cpuinfo"}

// DetectAccel decides the accelerator for want. KVM counts as usable when
// /dev/kvm opens read-write and the CPU advertises hardware virtualization
// (the vmx or svm flag in /proc/cpuinfo). The second condition is there
// because some hosts (e.g. inside Firecracker) offer a paravirtual /dev/kvm
// on which VM creation succeeds but a stock guest kernel hangs forever.
//
// AccelAuto gives KVM or TCG with a notice; AccelKVM gives KVM or an error
// wrapping ErrNoKVM; AccelTCG is always honoured. A caller that starts many
// machines may decide once and set Machine.Accel to the result, so that the
// notice is shown once.
func DetectAccel(want Accel) (AccelChoice, error) { return hostProbe.decide(want) }

func (p accelProbe) decide(want Accel) (AccelChoice, error) {
	switch want {
	case AccelTCG:
		return AccelChoice{Accel: AccelTCG}, nil
	case AccelKVM, AccelAuto, "":
	default:
		return AccelChoice{}, fmt.Errorf("decide accelerator: %q: want auto, kvm or tcg", want)
	}
	err := p.kvmUsable()
	switch {
	case err == nil:
		return AccelChoice{Accel: AccelKVM}, nil
	case want == AccelKVM:
		return AccelChoice{}, fmt.Errorf("accelerator kvm requested: %w: %w", ErrNoKVM, err)
	default:
		return AccelChoice{Accel: AccelTCG,
			Notice: fmt.Sprintf("qemu: kvm unusable (%v): using TCG, boots are several times slower", err)}, nil
	}
}

// kvmUsable returns nil if KVM is usable, else why not.
func (p accelProbe) kvmUsable() error {
	f, err := os.OpenFile(p.kvm, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open %s read-write: %w", p.kvm, errors.Unwrap(err))
	}
	f.Close()
	flags, err := cpuFlags(p.cpuinfo)
	if err != nil {
		return err
	}
	if !slices.Contains(flags, "vmx") && !slices.Contains(flags, "svm") {
		return fmt.Errorf("no vmx or svm CPU flag in %s: no hardware virtualization", p.cpuinfo)
	}
	return nil
}

// cpuFlags returns the flags of the first processor in a /proc/cpuinfo file.
func cpuFlags(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read cpu flags: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		key, value, ok := strings.Cut(s.Text(), ":")
		if ok && strings.TrimSpace(key) == "flags" {
			return strings.Fields(value), nil
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("read cpu flags: %s: %w", path, err)
	}
	return nil, fmt.Errorf("read cpu flags: no flags line in %s", path)
}
