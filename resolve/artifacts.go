package resolve

// The specs of the files qcluster uses. Each takes the explicit path a caller
// was given ("" for none). Runfile paths are those of the Bazel targets in
// third_party/ and testos/.

// QEMU is qemu-system-x86_64.
func QEMU(explicit string) Spec {
	return Spec{What: "QEMU (qemu-system-x86_64)", Explicit: explicit, Env: "QCLUSTER_QEMU", Commands: []string{"qemu-system-x86_64"}, Paths: []string{"/usr/libexec/qemu-kvm"},
		Hint: "apt-get install --no-install-recommends qemu-system-x86, or make deps"}
}

// Swtpm is the swtpm binary.
func Swtpm(explicit string) Spec {
	return Spec{What: "swtpm", Explicit: explicit, Env: "QCLUSTER_SWTPM", Commands: []string{"swtpm"},
		Hint: "apt-get install --no-install-recommends swtpm, or make deps"}
}

// SwtpmSetup is swtpm_setup, which manufactures a TPM's state.
func SwtpmSetup(explicit string) Spec {
	return Spec{What: "swtpm_setup", Explicit: explicit, Env: "QCLUSTER_SWTPM_SETUP", Commands: []string{"swtpm_setup"},
		Hint: "apt-get install --no-install-recommends swtpm-tools, or make deps"}
}

// Image is the default OS image: the OCI layout built by `make image`.
func Image(explicit string) Spec {
	// The runfile names a file in the layout: a runfiles manifest lists a
	// directory (a tree artifact) as one entry or, in some versions, as its
	// files; a file inside is found either way.
	return Spec{What: "OS image (OCI layout)", Explicit: explicit, Runfile: "qcluster/testos/image/oci-layout", RunfileDir: true,
		Env: "QCLUSTER_IMAGE", Paths: []string{"out/testos"}, Hint: "run make image"}
}

// Loader is the A/B loader put on the ESP (systemd-boot).
func Loader(explicit string) Spec {
	return Spec{What: "loader (systemd-bootx64.efi)", Explicit: explicit, Runfile: "qcluster/testos/loader.efi",
		Env: "QCLUSTER_LOADER", Paths: []string{"out/loader.efi", "third_party/cache/root/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
			"/usr/lib/systemd/boot/efi/systemd-bootx64.efi"}, Hint: "run make image (or apt-get install systemd-boot-efi)"}
}

// Kernel is the guest kernel (Debian's cloud kernel) for direct kernel boot.
func Kernel(explicit string) Spec {
	return Spec{What: "guest kernel (vmlinuz)", Explicit: explicit, Runfile: "debian_kernel/boot/vmlinuz",
		Env: "QCLUSTER_KERNEL", Paths: []string{"third_party/cache/root/boot/vmlinuz-*-cloud-amd64"}, Hint: "run make fetch"}
}

// Modules is the guest kernel's module directory (lib/modules/<abi>). Its
// runfile is a file in it (a runfiles manifest lists no directories), under
// the ABI that @debian_kernel//:abi names; both are in :modules.
func Modules(explicit string) Spec {
	return Spec{What: "guest kernel modules", Explicit: explicit,
		Runfile: "debian_kernel/lib/modules/{abi}/modules.builtin", RunfileDir: true, RunfileABI: "debian_kernel/abi",
		Env: "QCLUSTER_MODULES", Paths: []string{"third_party/cache/root/lib/modules/*-cloud-amd64"}, Hint: "run make fetch"}
}

// Nanoswitch is the cluster's virtual switch command (nanoswitch/cmd/nanoswitch).
func Nanoswitch(explicit string) Spec {
	return Spec{What: "nanoswitch", Explicit: explicit, Runfile: "qcluster/nanoswitch/cmd/nanoswitch/nanoswitch_/nanoswitch",
		Env: "QCLUSTER_NANOSWITCH", Commands: []string{"nanoswitch"}, Paths: []string{"out/bin/nanoswitch"},
		Hint: "run make (it builds out/bin/nanoswitch) or go build -o out/bin/nanoswitch ./nanoswitch/cmd/nanoswitch"}
}

// OVMFCode is the UEFI firmware code without secure boot (Bazel's copy; on
// the host, qemu.FindOVMF reads QEMU's firmware descriptors).
func OVMFCode(explicit string) Spec {
	return Spec{What: "UEFI firmware code (OVMF_CODE_4M.fd)", Explicit: explicit,
		Runfile: "debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.fd", Env: "QCLUSTER_OVMF_CODE"}
}

// OVMFVars is the UEFI variable store template matching OVMFCode.
func OVMFVars(explicit string) Spec {
	return Spec{What: "UEFI vars template (OVMF_VARS_4M.fd)", Explicit: explicit,
		Runfile: "debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.fd", Env: "QCLUSTER_OVMF_VARS"}
}

// OVMFCodeSecureBoot is the UEFI firmware code with Secure Boot (it needs
// SMM), for OVMFVarsMS.
func OVMFCodeSecureBoot(explicit string) Spec {
	return Spec{What: "UEFI firmware code with Secure Boot (OVMF_CODE_4M.secboot.fd)", Explicit: explicit,
		Runfile: "debian_ovmf/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
		Paths:   []string{"third_party/cache/root/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"},
		Hint:    "run make fetch (or apt-get install ovmf)"}
}

// OVMFVarsMS is the UEFI variable store template with Microsoft's keys
// enrolled: Secure Boot on, an unsigned loader refused.
func OVMFVarsMS(explicit string) Spec {
	return Spec{What: "UEFI vars template with Microsoft's keys (OVMF_VARS_4M.ms.fd)", Explicit: explicit,
		Runfile: "debian_ovmf/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
		Paths:   []string{"third_party/cache/root/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"},
		Hint:    "run make fetch (or apt-get install ovmf)"}
}

// Cluster is the cluster command (//launch:cluster) that the e2e suites run.
// Outside Bazel there is none to find: the suites build it from source.
func Cluster(explicit string) Spec {
	return Spec{What: "cluster command", Explicit: explicit, Runfile: "qcluster/launch/cluster_/cluster",
		Env: "QCLUSTER_CLUSTER"}
}

// Stub is the systemd EFI stub a UKI is built on.
func Stub(explicit string) Spec {
	return Spec{What: "EFI stub (linuxx64.efi.stub)", Explicit: explicit,
		Runfile: "debian_systemd_boot/usr/lib/systemd/boot/efi/linuxx64.efi.stub", Env: "QCLUSTER_STUB",
		Paths: []string{"third_party/cache/root/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
			"/usr/lib/systemd/boot/efi/linuxx64.efi.stub"}, Hint: "run make fetch"}
}

// Template is a snapshot of a ready cluster to restore instead of booting
// (a directory holding manifest.json), as the e2e suites' Bazel rule builds
// it. There is no default: without one, tests use their template cache.
func Template(explicit string) Spec {
	return Spec{What: "cluster template (a snapshot directory)", Explicit: explicit, Runfile: "qcluster/e2e/template/manifest.json", RunfileDir: true,
		Env: "QCLUSTER_TEMPLATE", Hint: "make one with cluster --snapshot DIR --exit-when-ready"}
}
