// Command agent is PID 1 of qcluster's default node OS (testos). It proves
// the machine it boots on and reports it over gRPC:
//
//  1. mounts /proc, /sys, /dev (devtmpfs), /run, /tmp and efivarfs; loads the
//     kernel modules of its initramfs (internal/kmodload, virtio-rng first so
//     that nothing waiting for randomness blocks under TCG);
//  2. reads its parameters (testos/api.Parameters as protojson) from fw_cfg;
//  3. in parallel: finds the boot disk's GPT partitions by type and name, opens
//     the booted slot (systemd-boot's LoaderEntrySelected, else A) through
//     dm-verity with the table from the kernel command line (qcluster.verity=),
//     reads every block back, mounts it (EROFS) on /system, formats DATA with
//     the system's mke2fs on first boot, mounts it on /data and counts boots;
//     brings the NIC up with DHCP; reads the TPM (EK, EK certificate, PCRs);
//  4. serves gRPC with mTLS on the listen port (health, NodeService,
//     Management, and Membership on the bootstrap node; members join the
//     leader) and prints one line "qcluster-agent: ready node=<name> addr=<ip>".
//
// On a fatal error it prints "qcluster-agent: fatal: <reason>" and powers the
// machine off; it never hangs silently. Without parameters it still comes up
// with a self-signed identity and a name derived from the MAC address.
//
// Limits: x86-64 Linux only (the DM ioctl layout is little-endian amd64's);
// IPv4 DHCP only; one NIC (the first Ethernet link); one TPM.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qcluster/qcluster/internal/kmodload"
	"github.com/qcluster/qcluster/testos/api"
	"github.com/qcluster/qcluster/testos/internal/boot"
)

// Paths inside the guest.
const (
	productInfoPath = boot.SystemMount + "/etc/qcluster/product-info.json"
	systemMount     = boot.SystemMount
	dataMount       = boot.DataMount
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	defer func() {
		if r := recover(); r != nil {
			fatal(fmt.Errorf("panic: %v\n%s", r, debug.Stack()))
		}
	}()
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "qcluster-agent: not PID 1; it is the init of a testos guest and does nothing elsewhere")
		os.Exit(2)
	}
	if err := run(context.Background(), log); err != nil {
		fatal(err)
	}
}

// fatal prints the reason on the console and powers off.
func fatal(err error) { boot.Fatal(err) }

// node is everything the agent learnt at boot; the gRPC services read it.
type node struct {
	cfg         *config
	product     *api.ProductInfo
	bootTime    time.Time // wall clock at kernel start, approximated
	readyMillis int64

	storage storageState
	net     netState
	tpm     *api.TPM

	roster *roster      // bootstrap node only
	member *memberState // members only

	powerReq chan int // LINUX_REBOOT_CMD_* asked for over gRPC
	log      *slog.Logger
}

// step logs how long a boot step took since boot.
func step(log *slog.Logger, name string, start time.Time) {
	log.Info("boot step done", "step", name, "took", time.Since(start).Round(time.Millisecond), "uptime", uptime().Round(time.Millisecond))
}

// run boots the node and serves until asked to power off or reboot.
func run(ctx context.Context, log *slog.Logger) error {
	t0 := time.Now()
	if err := boot.EarlyMounts(); err != nil {
		return err
	}
	go reapZombies()
	// Stage 1 (testos/init) normally loaded the modules and mounted the
	// system; run as /init directly, the agent does it all itself.
	marker, err := os.ReadFile(boot.Stage1Marker)
	stage1 := err == nil
	if !stage1 {
		if err := kmodload.Load(boot.ModulesDir); err != nil {
			return err
		}
		step(log, "modules", t0)
	}
	if err := boot.MountEFIVars(); err != nil {
		log.Warn("no EFI variables: the slot defaults to A", "err", err)
	}
	log.Info("agent started", "after_stage1", stage1, "stage1_verified", strings.TrimSpace(string(marker)), "uptime", uptime().Round(time.Millisecond))

	params, err := readParams(paramsPath)
	if err != nil {
		return err
	}
	if params != nil && len(params.GetEntropySeed()) > 0 {
		if err := addEntropy(params.GetEntropySeed()); err != nil {
			return err
		}
	}
	waitForEntropy(log)
	step(log, "entropy", t0)
	link, err := findLink(ctx)
	if err != nil {
		return err
	}
	cfg, err := newConfig(params, link.Attrs().HardwareAddr)
	if err != nil {
		return err
	}
	if cfg.logLevel != 0 {
		if err := os.WriteFile("/proc/sys/kernel/printk", []byte(fmt.Sprintf("%d", cfg.logLevel)), 0); err != nil {
			log.Warn("set kernel log level", "level", cfg.logLevel, "err", err)
		}
	}
	if err := unix.Sethostname([]byte(cfg.hostname)); err != nil {
		return fmt.Errorf("set hostname %q: %w", cfg.hostname, err)
	}
	log.Info("parameters", "from_fw_cfg", cfg.fromParams, "node", cfg.nodeName, "role", cfg.role, "leader", cfg.leaderAddress)

	n := &node{cfg: cfg, powerReq: make(chan int, 1), log: log}

	// Storage, network and TPM are independent: do them at once.
	var wg sync.WaitGroup
	var storageErr, netErr error
	wg.Add(3)
	go func() {
		defer wg.Done()
		s := time.Now()
		storageErr = n.storage.bring(ctx, log, stage1)
		step(log, "storage", s)
	}()
	go func() {
		defer wg.Done()
		s := time.Now()
		netErr = n.net.bring(ctx, log, cfg, link)
		step(log, "network", s)
	}()
	go func() {
		defer wg.Done()
		s := time.Now()
		n.tpm = readTPM(log, tpmDevice)
		step(log, "tpm", s)
	}()
	wg.Wait()
	if err := errors.Join(storageErr, netErr); err != nil {
		return err
	}
	if n.product, err = readProductInfo(productInfoPath); err != nil {
		return err
	}

	lis, err := net.Listen("tcp", cfg.listenAddr())
	if err != nil {
		return fmt.Errorf("grpc: listen on %s: %w", cfg.listenAddr(), err)
	}
	srv, err := n.serve(ctx, log, lis)
	if err != nil {
		return err
	}
	ip := n.net.primary()
	fmt.Fprintf(os.Stdout, "%snode=%s addr=%s\n", api.ReadyPrefix, cfg.nodeName, ip)

	if cfg.role == api.Role_ROLE_MEMBER {
		go n.member.run(ctx, log)
	}
	cmd := <-n.powerReq
	log.Info("power request: stopping gRPC", "cmd", fmt.Sprintf("%#x", cmd))
	srv.stop()
	boot.PowerOff(cmd)
	return nil
}

// uptime is the time since the kernel started (CLOCK_BOOTTIME).
func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
