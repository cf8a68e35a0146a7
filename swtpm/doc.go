// Package swtpm gives every node of a cluster an emulated TPM 2.0: a
// per-cluster local CA, per-node manufacture with swtpm_setup, and a process
// wrapper around `swtpm socket` that QEMU's tpm-emulator backend connects to.
//
// Three steps, each usable on its own:
//
//	ca, err := swtpm.NewCA(ctx, clusterDir+"/tpm-ca", swtpm.CAOptions{})
//	m, err := ca.Manufacture(ctx, nodeDir+"/tpm", swtpm.ManufactureOptions{Name: "node1"})
//	t, err := swtpm.Start(ctx, swtpm.Options{StateDir: m.StateDir, CtrlSocket: sockDir + "/node1.tpm"})
//	defer t.Close()
//	// QEMU: -chardev socket,id=chrtpm,path=SOCK -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0
//
// # CA
//
// NewCA keeps everything under the directory it is given, never under /etc
// or /var/lib: the CA key and certificate, swtpm-localca.conf,
// swtpm-localca.options, swtpm_setup.conf, swtpm_localca's serial counter and
// its lock file (.lock.swtpm-localca). The CA is a single self-signed ECDSA
// P-256 certificate made here in Go, up front, rather than the root plus
// intermediate that swtpm_localca would create on first use: swtpm_localca 0.7.1
// checks for the signing key outside its lock, so manufacturers running in
// parallel against a fresh directory can see the key before the issuer
// certificate exists and fail; it also needs certtool (gnutls-bin) for that step
// and leaves the keys 0640. The directory is 0700 and the key 0600. An existing
// CA in the directory is reused, so a cluster directory kept across launches
// keeps its CA. NewCA takes the same flock as swtpm_localca.
//
// Every EK certificate that swtpm_localca signs chains directly to
// CA.Certificate; CA.VerifyEK checks one.
//
// # Manufacture
//
// CA.Manufacture runs
//
//	swtpm_setup --tpm2 --tpmstate DIR --create-ek-cert --create-platform-cert
//	  --lock-nvram --not-overwrite --pcr-banks sha256 --vmid NAME --config CONF
//	  --tpm "SWTPM socket" --write-ek-cert-files DIR
//
// in a scratch directory beside the state directory and renames the result
// into place, so a state directory is either absent (or empty) or complete. An
// already manufactured state directory (one holding tpm2-00.permall) is kept as
// it is: TPM state survives node restarts and relaunches. The EK certificates
// (RSA 2048 in NV index 0x01c00002, ECC P-384 in 0x01c00016) are also kept as
// DER files in the state directory and returned. Manufacturing several nodes
// at once is safe: swtpm_localca hands out certificate serials under its lock.
//
// swtpm_setup runs as the init of a PID namespace of its own (through a user
// namespace when not root), because the swtpm it starts cannot be reached by
// Pdeathsig and would otherwise outlive a killed launcher forever; where the
// system refuses namespaces it runs without one.
//
// # Run
//
// Start runs `swtpm socket --tpm2 --tpmstate dir=DIR,mode=0600 --ctrl
// type=unixio,path=SOCK,mode=0600 --terminate` and returns once the control
// channel has answered a CMD_INIT (followed by CMD_STOP, which leaves the TPM
// as QEMU expects to find it): swtpm 0.7.1 creates its sockets before it reads
// the state and reads the state only on CMD_INIT, so a corrupt or missing state
// would otherwise surface later as a QEMU error without swtpm's own message.
// QEMU sends TPM2_Startup itself (through the firmware); no --flags is passed.
// With --terminate swtpm exits when its data connection (QEMU's) closes;
// closing a control connection does not end it.
//
// swtpm's stdout and stderr go to Options.LogFile (if set) and a tail is kept
// for errors. swtpm's own --log file= is not used: with it, swtpm's error
// messages leave stderr, so a failure's message would need the file. A
// LogLevel above 0 passes --log fd=3 pointing at the same pipe (swtpm 0.7.1
// closes the descriptor it is given when that is fd 2, and then fails).
//
// # Limits
//
//   - TPM 2.0 only; unencrypted state; no state migration.
//   - Linux only (Pdeathsig, flock).
//   - UNIX socket paths are at most 107 bytes; paths passed to swtpm must not
//     contain ',' (its option syntax); paths written to the config files must
//     not contain '#', '$' or newlines (swtpm_setup's and swtpm_localca's config
//     syntax); program paths must not contain spaces (swtpm_setup splits --tpm).
//   - A parent killed with SIGKILL while swtpm_setup runs leaves its scratch
//     directory (.NAME.manufacture-*) beside the state directory.
package swtpm
