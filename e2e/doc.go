// Package e2e holds qcluster's end-to-end suites: real clusters of the
// default testos image under real QEMU (TCG), swtpm, OVMF and the Debian
// kernel, launched through cluster/clustertest or the built `cluster`
// command.
//
// Suites, each its own test function (go test -v ./e2e -run NAME):
//
//   - TestCluster: one 3-node cluster shared by ordered subtests: Core
//     (membership, what each node reports, name resolution), Security
//     (mTLS refused without the cluster's certificate, SOCKS5 without
//     credentials, loopback-only listeners, file modes), Reboot, KillStart,
//     Partition and Isolate.
//   - TestFailFast: launches that must fail within seconds of the failure,
//     naming the node and carrying its console: a kernel panic (an init
//     that exits), a corrupted system partition (dm-verity), the
//     Microsoft-enrolled firmware variables (the unsigned loader is
//     refused), a QEMU and a swtpm killed during boot.
//   - TestBadInput: the command and the API given bad input: a one-line
//     error, exit status ≠ 0 and nothing left behind. Runs in -short mode
//     (it boots nothing).
//   - TestProcessHygiene: SIGKILL of the command while nodes boot, SIGINT
//     while booting and once ready, and a loop of launches (2, or 20 with
//     -e2e.long).
//   - TestConcurrentClusters: three 1-node clusters launched at once (the
//     default image, a zstd-compressed copy, an unverified read) all ready.
//
// Every suite launches its own clusters (fresh names, state and socket
// directories), so suites and other packages' tests can run at the same
// time. Tests that boot VMs are skipped with -short. The command's cases
// run it in a private mount namespace whose /tmp is a directory of the
// test's, and in its own session, so that "nothing left behind" is checked
// exactly even while other clusters run on the machine; they need root.
//
// Limits: x86-64 hosts; TCG is forced (Accel "tcg") because a paravirtual
// /dev/kvm may hang stock guests; the whole package takes several minutes
// under TCG, more than go test's default 10-minute timeout allows on a
// loaded machine: run it with -timeout 30m (make test does).
package e2e
