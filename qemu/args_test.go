package qemu

import (
	"errors"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// golden compares got with testdata/name.golden, or rewrites it under -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./qemu -run %s -update)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from the output (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// fixtures creates the files a machine names under a temp dir and returns
// the dir; golden output shows it as $DIR.
func fixtures(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func argvText(dir string, args []string) string {
	return strings.ReplaceAll(strings.Join(args, "\n")+"\n", dir, "$DIR")
}

func full(t *testing.T) (Machine, string) {
	dir := fixtures(t, "code.fd", "vars.fd", "disk,0.raw", "system.raw", "params.json")
	fdFile, err := os.Open(os.DevNull) // stands in for a socket: argv only names its fd
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fdFile.Close() })
	return Machine{
		Name:      "node0",
		CPUs:      2,
		MemoryMiB: 2048,
		Accel:     AccelKVM,
		Firmware:  &Firmware{Code: dir + "/code.fd", Vars: dir + "/vars.fd"},
		Disks: []Disk{
			{Path: dir + "/disk,0.raw"},
			{Path: dir + "/system.raw", ReadOnly: true, Cache: "writeback"},
		},
		NICs: []NIC{
			{Stream: dir + "/switch.sock", Pcap: dir + "/node0-net0.pcap"},
			{FD: fdFile, MAC: net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}},
		},
		TPM:       &TPM{CtrlSocket: dir + "/tpm.ctrl"},
		FwCfg:     []FwCfgFile{{Name: "opt/qcluster/parameters", File: dir + "/params.json"}},
		Reboot:    true,
		QMPSocket: dir + "/qmp.sock",
		ExtraArgs: []string{"-d", "guest_errors"},
	}, dir
}

// TestArgvGolden pins the command lines of a few machines, argument by argument.
func TestArgvGolden(t *testing.T) {
	t.Run("full", func(t *testing.T) {
		m, dir := full(t)
		m, err := m.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		args, files, _ := m.argv(AccelKVM, wiring{})
		if len(files) != 1 || files[0] != m.NICs[1].FD {
			t.Errorf("inherited files = %v, want the second NIC's", files)
		}
		golden(t, "full", argvText(dir, args))

		// The human variant, as written to qemu.sh.
		args, _, notes := m.argv(AccelKVM, wiring{human: true})
		v := &VM{m: m, accel: AccelKVM}
		golden(t, "full-script", strings.ReplaceAll(v.script(append([]string{"/usr/bin/qemu-system-x86_64"}, args...), notes), dir, "$DIR"))
	})
	t.Run("direct", func(t *testing.T) {
		dir := fixtures(t, "vmlinuz", "initrd")
		m, err := Machine{Name: "test-1", Kernel: &KernelBoot{Kernel: dir + "/vmlinuz", Initrd: dir + "/initrd",
			Append: "console=ttyS0 quiet"},
			NICs: []NIC{{User: &UserNet{Restrict: true, HostForwards: []HostForward{
				{Host: netip.MustParseAddrPort("127.0.0.1:10022"), GuestPort: 22},
				{UDP: true, Host: netip.MustParseAddrPort("[::1]:10053"), GuestPort: 53}}}}},
		}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		args, _, _ := m.argv(AccelTCG, wiring{})
		golden(t, "direct", argvText(dir, args))
	})
	t.Run("secure", func(t *testing.T) {
		dir := fixtures(t, "code.fd", "vars.fd")
		m, err := Machine{Name: "sb", Firmware: &Firmware{Code: dir + "/code.fd", Vars: dir + "/vars.fd", SMM: true},
			NoRNG: true}.withDefaults()
		if err != nil {
			t.Fatal(err)
		}
		args, _, _ := m.argv(AccelTCG, wiring{})
		golden(t, "secure", argvText(dir, args))
	})
}

// TestArgvDeterministic: the same machine gives the same argv every time.
func TestArgvDeterministic(t *testing.T) {
	m, _ := full(t)
	m, err := m.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := m.argv(AccelTCG, wiring{})
	for range 20 {
		again, _, _ := m.argv(AccelTCG, wiring{})
		if strings.Join(again, "\x00") != strings.Join(first, "\x00") {
			t.Fatalf("argv changed between calls:\n%q\n%q", first, again)
		}
	}
	if m.NICs[0].MAC.String() != DefaultMAC("node0", 0).String() {
		t.Errorf("nic 0 mac = %s, want the derived %s", m.NICs[0].MAC, DefaultMAC("node0", 0))
	}
}

// TestInvalidMachines: each mistake gives a one-line error wrapping ErrInvalid.
func TestInvalidMachines(t *testing.T) {
	dir := fixtures(t, "f")
	f := dir + "/f"
	for name, m := range map[string]Machine{
		"no name":        {},
		"bad name":       {Name: "a b"},
		"cpus":           {Name: "n", CPUs: -1},
		"memory":         {Name: "n", MemoryMiB: 8},
		"accel":          {Name: "n", Accel: "hvf"},
		"both boots":     {Name: "n", Firmware: &Firmware{Code: f, Vars: f}, Kernel: &KernelBoot{Kernel: f}},
		"missing vars":   {Name: "n", Firmware: &Firmware{Code: f, Vars: dir + "/nope"}},
		"missing kernel": {Name: "n", Kernel: &KernelBoot{Kernel: dir + "/nope"}},
		"disk dir":       {Name: "n", Disks: []Disk{{Path: dir}}},
		"disk cache":     {Name: "n", Disks: []Disk{{Path: f, Cache: "fast"}}},
		"nic none":       {Name: "n", NICs: []NIC{{}}},
		"nic two":        {Name: "n", NICs: []NIC{{Stream: f, User: &UserNet{}}}},
		"nic multicast":  {Name: "n", NICs: []NIC{{Stream: f, MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}}},
		"nic dup mac": {Name: "n", NICs: []NIC{{Stream: f, MAC: DefaultMAC("x", 0)},
			{Stream: f, MAC: DefaultMAC("x", 0)}}},
		"hostfwd public": {Name: "n", NICs: []NIC{{User: &UserNet{HostForwards: []HostForward{
			{Host: netip.MustParseAddrPort("0.0.0.0:22"), GuestPort: 22}}}}}},
		"hostfwd port 0": {Name: "n", NICs: []NIC{{User: &UserNet{HostForwards: []HostForward{
			{Host: netip.MustParseAddrPort("127.0.0.1:0"), GuestPort: 22}}}}}},
		"tpm":            {Name: "n", TPM: &TPM{}},
		"fw_cfg name":    {Name: "n", FwCfg: []FwCfgFile{{Name: "etc/x", File: f}}},
		"fw_cfg long":    {Name: "n", FwCfg: []FwCfgFile{{Name: "opt/" + strings.Repeat("x", 52), File: f}}},
		"fw_cfg twice":   {Name: "n", FwCfg: []FwCfgFile{{Name: "opt/x", File: f}, {Name: "opt/x", File: f}}},
		"fw_cfg missing": {Name: "n", FwCfg: []FwCfgFile{{Name: "opt/x", File: dir + "/nope"}}},
	} {
		_, err := New(m, Options{Dir: dir})
		if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: New = %v, want a one-line error wrapping ErrInvalid", name, err)
		}
	}
	if _, err := New(Machine{Name: "n"}, Options{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("no directory: New = %v, want ErrInvalid", err)
	}
}
