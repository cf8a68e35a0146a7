package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeHost makes a /dev/kvm stand-in (a regular file, mode given) and a
// cpuinfo with the given flags.
func fakeHost(t *testing.T, kvmMode os.FileMode, flags string) accelProbe {
	t.Helper()
	dir := t.TempDir()
	p := accelProbe{kvm: filepath.Join(dir, "kvm"), cpuinfo: filepath.Join(dir, "cpuinfo")}
	if kvmMode != 0 {
		if err := os.WriteFile(p.kvm, nil, kvmMode); err != nil {
			t.Fatal(err)
		}
	}
	info := "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: " + flags + "\nbugs\t\t: spectre_v1\n\n" +
		"processor\t: 1\nflags\t\t: fpu\n"
	if err := os.WriteFile(p.cpuinfo, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAccelProbe(t *testing.T) {
	for _, c := range []struct {
		name    string
		kvmMode os.FileMode
		flags   string
		want    Accel
		reason  string // in the notice and in the error for an explicit kvm
	}{
		{"vmx", 0o666, "fpu vme vmx sse", AccelKVM, ""},
		{"svm", 0o666, "fpu svm", AccelKVM, ""},
		{"paravirtual kvm without vmx or svm", 0o666, "fpu hypervisor sse", AccelTCG, "no vmx or svm CPU flag"},
		{"no /dev/kvm", 0, "fpu vmx", AccelTCG, "no such file or directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := fakeHost(t, c.kvmMode, c.flags)
			got, err := p.decide(AccelAuto)
			if err != nil || got.Accel != c.want {
				t.Fatalf("auto = %+v, %v; want %s", got, err, c.want)
			}
			if c.reason == "" && got.Notice != "" {
				t.Errorf("notice %q, want none", got.Notice)
			}
			if c.reason != "" && (!strings.Contains(got.Notice, c.reason) || !strings.Contains(got.Notice, "using TCG") ||
				strings.Contains(got.Notice, "\n")) {
				t.Errorf("notice %q, want one line with %q", got.Notice, c.reason)
			}
			if got, err := p.decide(AccelTCG); err != nil || got.Accel != AccelTCG || got.Notice != "" {
				t.Errorf("tcg = %+v, %v; want tcg without notice", got, err)
			}
			got, err = p.decide(AccelKVM)
			if c.want == AccelKVM {
				if err != nil || got.Accel != AccelKVM {
					t.Errorf("kvm = %+v, %v", got, err)
				}
			} else if !errors.Is(err, ErrNoKVM) || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("kvm = %+v, %v; want ErrNoKVM saying %q", got, err, c.reason)
			}
		})
	}
	if os.Geteuid() != 0 {
		t.Run("read-only /dev/kvm", func(t *testing.T) {
			p := fakeHost(t, 0o444, "vmx")
			if got, _ := p.decide(AccelAuto); got.Accel != AccelTCG || !strings.Contains(got.Notice, "permission denied") {
				t.Errorf("auto = %+v, want tcg: permission denied", got)
			}
		})
	}
	if _, err := (accelProbe{}).decide("hvf"); err == nil {
		t.Errorf("decide(hvf): no error")
	}
}

// TestAccelHost logs what this host gets; it asserts nothing about the host.
func TestAccelHost(t *testing.T) {
	c, err := DetectAccel(AccelAuto)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("auto: %s %s", c.Accel, c.Notice)
}
