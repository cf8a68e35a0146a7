package cluster

import (
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"time"
)

// Options describe a cluster. The zero value of every field is a sensible
// default, written beside it.
type Options struct {
	// Name of the cluster, used in DNS (node0.<name>.qcluster.test) and
	// certificates. Default: "qc" followed by 6 random hex digits.
	Name string
	// Nodes is the number of nodes. Default: 3. At most 64.
	Nodes int
	// Node holds the defaults for every node; PerNode overrides them for
	// node i (a zero field in an override keeps the default).
	Node    NodeOptions
	PerNode map[int]NodeOptions
	// Image is the OS image, an OCI layout directory. Default: the testos
	// image built by `make image` (resolve.Image).
	Image string
	// Loader is the EFI loader put on every ESP. Default: resolve.Loader.
	Loader string
	// Unverified skips chunk verification of the image's payloads so that
	// they can be reflinked. Default: false (every byte is checked once).
	Unverified bool
	// Accel is the accelerator: "auto" (KVM where usable, else TCG), "kvm"
	// or "tcg". Default: "auto".
	Accel string
	// StateDir holds disks, TPM state, logs and sockets. Default: a fresh
	// directory under TempDir. It must not be in use by another cluster.
	StateDir string
	// TempDir is where the fresh StateDir is made. Default: os.TempDir().
	TempDir string
	// KeepState keeps StateDir after Close. Default: false (removed).
	KeepState bool
	// Profile is the guest OS's profile. Default: none — Launch fails; the
	// default image's profile is testos/profile (cluster does not import it).
	Profile Profile
	// Timeout bounds the whole launch, from the first step to every node
	// ready. Default: 10 minutes.
	Timeout time.Duration
	// LogDir receives the nodes' serial logs and command lines. Default:
	// StateDir/logs.
	LogDir string
	// Subnet of the cluster's network. Default: 10.42.0.0/24; node i gets
	// host address 10+i, the gateway .1.
	Subnet netip.Prefix
	// Progress receives an event at the start and end of every step and
	// when a node becomes ready. Default: none. Called from Launch's
	// goroutines, one at a time.
	Progress func(Event)
	// Logger receives debug and info logs. Default: discard.
	Logger *slog.Logger
	// Binaries: explicit paths of helper programs; empty looks them up
	// (package resolve: runfiles, $QCLUSTER_*, PATH, out/bin).
	QEMU, Swtpm, SwtpmSetup, Nanoswitch string
	// SwitchCommand is the argv prefix that runs the cluster's switch (the
	// nanoswitch command's flags follow), for programs that re-execute
	// themselves as the switch: nanoswitch/switchmain.Command. Default: the
	// Nanoswitch program.
	SwitchCommand []string
	// Firmware: explicit OVMF code and vars template; empty discovers them.
	FirmwareCode, FirmwareVars string
	// CertValidity is how long the cluster's certificates are valid. Default:
	// 7 days; a template for snapshots wants as long as it may be restored.
	CertValidity time.Duration

	// Snapshot, if set, restores the cluster from this snapshot directory
	// (see Cluster.Snapshot) instead of booting it: nothing boots, the
	// nodes carry on from the moment of the snapshot. The snapshot decides
	// the nodes, their machines, the subnet and the guests' cluster name
	// (Plan.Name); options given here must agree with it. Name names the
	// restored cluster on this host. Nothing writes to the snapshot, so
	// any number of restores of one snapshot can run at once.
	Snapshot string
	// Cold tells template caches (cluster/warm) to boot the cluster rather
	// than restore it from a template. Launch itself always boots unless
	// Snapshot is set. Default: false.
	Cold bool
}

// NodeOptions are a node's resources.
type NodeOptions struct {
	// CPUs of the VM. Default: 1 (under TCG one vCPU per node boots the
	// cluster faster than two: the host's cores are the limit).
	CPUs int
	// MemoryMiB of the VM. Default: 512. Between 128 and 65536.
	MemoryMiB int
	// DiskSize in bytes. Default: 3 GiB.
	DiskSize int64
	// NoTPM leaves the node without a TPM. Default: false (a swtpm per node).
	NoTPM bool
	// ExtraQEMUArgs are appended to the node's QEMU command line.
	ExtraQEMUArgs []string
}

// Limits that catch typos rather than real needs; exported so that a
// command line can check its flags against the same numbers.
const (
	MaxNodes     = 64
	MinMemoryMiB = 128
	MaxMemoryMiB = 64 << 10
	MaxCPUs      = 64
)

const defaultDisk = 3 << 30

// withDefaults fills o's defaults and checks it. Errors say which option is
// wrong and what is allowed.
func (o Options) withDefaults() (Options, error) {
	if o.Nodes == 0 {
		o.Nodes = 3
	}
	if o.Nodes < 1 || o.Nodes > MaxNodes {
		return o, fmt.Errorf("%d nodes: want 1 to %d", o.Nodes, MaxNodes)
	}
	if o.Name == "" {
		o.Name = "qc" + randomHex(3)
	}
	if !validName.MatchString(o.Name) {
		return o, fmt.Errorf("cluster name %q: want lowercase letters, digits and dashes, at most 32, starting with a letter", o.Name)
	}
	switch o.Accel {
	case "":
		o.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		return o, fmt.Errorf("accelerator %q: want auto, kvm or tcg", o.Accel)
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.CertValidity == 0 {
		o.CertValidity = defaultValidity
	}
	if o.CertValidity < time.Hour {
		return o, fmt.Errorf("certificate validity %s: want at least an hour", o.CertValidity)
	}
	if o.Timeout < 0 {
		return o, fmt.Errorf("timeout %s: want a positive duration", o.Timeout)
	}
	if !o.Subnet.IsValid() {
		o.Subnet = netip.MustParsePrefix("10.42.0.0/24")
	}
	if !o.Subnet.Addr().Is4() || o.Subnet.Bits() > 24 {
		return o, fmt.Errorf("subnet %s: want an IPv4 prefix of /24 or larger", o.Subnet)
	}
	o.Subnet = o.Subnet.Masked()
	if o.Profile == nil {
		return o, fmt.Errorf("no OS profile: set Options.Profile (testos/profile for the default image)")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	for i := range o.PerNode {
		if i < 0 || i >= o.Nodes {
			return o, fmt.Errorf("override for node %d: the cluster has nodes 0 to %d", i, o.Nodes-1)
		}
	}
	for i := 0; i < o.Nodes; i++ {
		if _, err := o.nodeOptions(i); err != nil {
			return o, err
		}
	}
	return o, nil
}

var validName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// nodeOptions merges node i's override over the defaults and checks them.
func (o Options) nodeOptions(i int) (NodeOptions, error) {
	n := o.Node
	if ov, ok := o.PerNode[i]; ok {
		if ov.CPUs != 0 {
			n.CPUs = ov.CPUs
		}
		if ov.MemoryMiB != 0 {
			n.MemoryMiB = ov.MemoryMiB
		}
		if ov.DiskSize != 0 {
			n.DiskSize = ov.DiskSize
		}
		n.NoTPM = n.NoTPM || ov.NoTPM
		n.ExtraQEMUArgs = append(append([]string(nil), n.ExtraQEMUArgs...), ov.ExtraQEMUArgs...)
	}
	if n.CPUs == 0 {
		n.CPUs = 1
	}
	if n.MemoryMiB == 0 {
		n.MemoryMiB = 512
	}
	if n.DiskSize == 0 {
		n.DiskSize = defaultDisk
	}
	if n.CPUs < 1 || n.CPUs > MaxCPUs {
		return n, fmt.Errorf("node%d: %d CPUs: want 1 to %d", i, n.CPUs, MaxCPUs)
	}
	if n.MemoryMiB < MinMemoryMiB || n.MemoryMiB > MaxMemoryMiB {
		return n, fmt.Errorf("node%d: memory %d MiB: want %d to %d MiB", i, n.MemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	}
	if n.DiskSize < 0 {
		return n, fmt.Errorf("node%d: disk size %d: want a positive size", i, n.DiskSize)
	}
	return n, nil
}
