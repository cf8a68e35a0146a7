package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/testos/api"
)

// earlyMounts mounts the kernel's file systems PID 1 needs.
func earlyMounts() error {
	for _, m := range []struct {
		src, dir, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := os.MkdirAll(m.dir, 0o755); err != nil {
			return fmt.Errorf("mount %s: %w", m.dir, err)
		}
		if err := unix.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.dir, err)
		}
	}
	return nil
}

// efiVarsDir is where efivarfs is mounted.
const efiVarsDir = "/sys/firmware/efi/efivars"

// mountEFIVars mounts efivarfs when the machine booted through UEFI (the
// efivarfs module is loaded by then). Without it the slot falls back to A.
func mountEFIVars(log *slog.Logger) {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		log.Info("no EFI firmware interface: booted without UEFI")
		return
	}
	if err := unix.Mount("efivarfs", efiVarsDir, "efivarfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		log.Warn("mount efivarfs", "dir", efiVarsDir, "err", err)
	}
}

// execMu keeps the zombie reaper from stealing the exit status of a child
// the agent waits for: commands hold it for reading, the reaper for writing.
var execMu sync.RWMutex

// reapZombies waits for orphans re-parented to PID 1.
func reapZombies() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, unix.SIGCHLD)
	for range ch {
		execMu.Lock()
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		execMu.Unlock()
	}
}

// runCommand runs argv with env and returns an error carrying argv and the
// tail of its output when it fails.
func runCommand(env []string, argv ...string) error {
	execMu.RLock()
	defer execMu.RUnlock()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		tail := out.Bytes()
		if len(tail) > 400 {
			tail = tail[len(tail)-400:]
		}
		return fmt.Errorf("run %q: %w: %s", argv, err, bytes.TrimSpace(tail))
	}
	return nil
}

// addEntropy mixes seed into the kernel's pool and credits it fully
// (RNDADDENTROPY), so that getrandom(2) does not block.
func addEntropy(seed []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("add entropy: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	buf := make([]byte, 8+len(seed)+3)
	*(*int32)(unsafe.Pointer(&buf[0])) = int32(8 * len(seed))
	*(*int32)(unsafe.Pointer(&buf[4])) = int32(len(seed))
	copy(buf[8:], seed)
	const rndAddEntropy = 0x40085203 // _IOW('R', 0x03, int[2])
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return fmt.Errorf("add entropy: ioctl RNDADDENTROPY (%d bytes): %w", len(seed), e)
	}
	return nil
}

// productInfoJSON is osimage.ProductInfo's JSON form (the agent imports
// nothing of the host side).
type productInfoJSON struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Version      string            `json:"version"`
	Architecture string            `json:"architecture"`
	BuildInfo    string            `json:"build_info"`
	Components   map[string]string `json:"components"`
}

// readProductInfo reads the product information baked into the initramfs.
func readProductInfo(path string) (*api.ProductInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read product info: %w", err)
	}
	var p productInfoJSON
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("read product info %s: %w", path, err)
	}
	return &api.ProductInfo{Id: p.ID, Name: p.Name, Version: p.Version, Architecture: p.Architecture,
		BuildInfo: p.BuildInfo, Components: p.Components}, nil
}

// waitForEntropy blocks until the kernel's random generator is initialised
// (getrandom without GRND_NONBLOCK), so that later users (DHCP transaction
// IDs, TLS keys) do not spin or block one by one. virtio-rng, a seed from the
// parameters or, failing both, the kernel's jitter entropy get it there.
func waitForEntropy(log *slog.Logger) {
	var b [1]byte
	if _, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK); err == nil {
		return
	}
	t := time.Now()
	log.Info("waiting for the kernel's random generator")
	for {
		if _, err := unix.Getrandom(b[:], 0); err != unix.EINTR {
			break
		}
	}
	log.Info("random generator ready", "waited", time.Since(t).Round(time.Millisecond))
}
