// Package boottest boots the testos image that `make image` builds (out/testos)
// in real QEMU under TCG: OVMF, a node disk synthesized by imagebuild/disk,
// a swtpm TPM, a SLIRP NIC with a host forward to the agent's gRPC port, and
// parameters through fw_cfg. Its tests assert what the agent reports over
// gRPC with mTLS, and that a corrupted system partition stops the boot loudly.
//
// It holds tests only. They are skipped under -short and, outside CI, when
// QEMU, OVMF, swtpm or the fetched guest artifacts are missing.
package boottest
