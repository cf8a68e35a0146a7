package main

import (
	"bytes"
	"encoding/json"
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
