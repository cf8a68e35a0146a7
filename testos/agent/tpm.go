package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/qcluster/qcluster/testos/api"
)

const (
	// tpmDevice is the kernel's TPM resource manager.
	tpmDevice = "/dev/tpmrm0"
	// ekCertIndex is the NV index of the RSA 2048 EK certificate (TCG EK
	// Credential Profile 2.0, §2.2.1.4 "Low Range").
	ekCertIndex = tpm2.TPMHandle(0x01c00002)
	// ekPersistentHandle is where the RSA EK is commonly persisted (TCG
	// Provisioning Guidance); swtpm_setup puts it there.
	ekPersistentHandle = tpm2.TPMHandle(0x81010001)
	// pcrCount is how many SHA-256 PCRs Status reports (0–9).
	pcrCount = 10
)

// readTPM reads what Status reports of the TPM. A missing TPM is not an
// error (present=false); partial failures are recorded in the result.
func readTPM(log *slog.Logger, dev string) *api.TPM {
	r := &api.TPM{Device: dev}
	if _, err := os.Stat(dev); err != nil {
		log.Info("no TPM", "device", dev)
		r.Device = ""
		return r
	}
	t, err := linuxtpm.Open(dev)
	if err != nil {
		r.Error = fmt.Sprintf("open %s: %v", dev, err)
		log.Warn("open TPM", "device", dev, "err", err)
		return r
	}
	defer t.Close()
	r.Present = true
	var errs []error
	if err := readTPMProperties(t, r); err != nil {
		errs = append(errs, err)
	}
	ek, err := readEK(t)
	if err != nil {
		errs = append(errs, err)
	} else {
		der, err := x509.MarshalPKIXPublicKey(ek)
		if err != nil {
			errs = append(errs, fmt.Errorf("marshal EK public key: %w", err))
		} else {
			r.EkPublicDer = der
			sum := sha256.Sum256(der)
			r.EkPublicSha256 = hex.EncodeToString(sum[:])
		}
	}
	cert, err := readNV(t, ekCertIndex)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("read EK certificate (NV %#x): %w", uint32(ekCertIndex), err))
	default:
		r.EkCertificateDer = trimDER(cert)
		if c, err := x509.ParseCertificate(r.EkCertificateDer); err != nil {
			errs = append(errs, fmt.Errorf("parse EK certificate: %w", err))
		} else if r.EkPublicDer != nil {
			der, _ := x509.MarshalPKIXPublicKey(c.PublicKey)
			r.EkCertificateMatches = bytes.Equal(der, r.EkPublicDer)
		}
	}
	pcrs, err := readPCRs(t, pcrCount)
	if err != nil {
		errs = append(errs, err)
	}
	r.Pcrs = pcrs
	if err := errors.Join(errs...); err != nil {
		r.Error = strings.ReplaceAll(err.Error(), "\n", "; ")
		log.Warn("read TPM", "err", r.Error)
	}
	return r
}

// readTPMProperties fills manufacturer, vendor string and firmware version.
func readTPMProperties(t transport.TPM, r *api.TPM) error {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapTPMProperties, Property: uint32(tpm2.TPMPTManufacturer), PropertyCount: 8}.Execute(t)
	if err != nil {
		return fmt.Errorf("get TPM properties: %w", err)
	}
	props, err := rsp.CapabilityData.Data.TPMProperties()
	if err != nil {
		return fmt.Errorf("get TPM properties: %w", err)
	}
	var vendor [4]uint32
	var fw [2]uint32
	for _, p := range props.TPMProperty {
		switch p.Property {
		case tpm2.TPMPTManufacturer:
			r.Manufacturer = fourCC(p.Value)
		case tpm2.TPMPTVendorString1, tpm2.TPMPTVendorString1 + 1, tpm2.TPMPTVendorString1 + 2, tpm2.TPMPTVendorString1 + 3:
			vendor[p.Property-tpm2.TPMPTVendorString1] = p.Value
		case tpm2.TPMPTFirmwareVersion1:
			fw[0] = p.Value
		case tpm2.TPMPTFirmwareVersion1 + 1:
			fw[1] = p.Value
		}
	}
	var v strings.Builder
	for _, x := range vendor {
		v.WriteString(fourCC(x))
	}
	r.Vendor = v.String()
	r.FirmwareVersion = fmt.Sprintf("%d.%d", fw[0], fw[1])
	return nil
}

// fourCC turns a TPM property holding four ASCII bytes into text.
func fourCC(v uint32) string {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return strings.TrimRight(strings.TrimSpace(string(bytes.TrimRight(b[:], "\x00"))), "\x00")
}

// readEK returns the RSA EK's public key: the persisted one, or else the one
// the standard template derives from the endorsement seed.
func readEK(t transport.TPM) (any, error) {
	if rsp, err := (tpm2.ReadPublic{ObjectHandle: ekPersistentHandle}).Execute(t); err == nil {
		pub, err := rsp.OutPublic.Contents()
		if err != nil {
			return nil, fmt.Errorf("read EK %#x: %w", uint32(ekPersistentHandle), err)
		}
		return tpm2.Pub(*pub)
	}
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.TPMRHEndorsement,
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("create EK from the RSA template: %w", err)
	}
	defer func() { _, _ = (tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}).Execute(t) }()
	pub, err := rsp.OutPublic.Contents()
	if err != nil {
		return nil, fmt.Errorf("create EK: %w", err)
	}
	return tpm2.Pub(*pub)
}

// readNV reads a whole NV index with the owner's (empty) password, in chunks.
func readNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pubRsp, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		return nil, err
	}
	pub, err := pubRsp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	const chunk = 512 // below every TPM's TPM_PT_NV_BUFFER_MAX
	var out []byte
	for off := 0; off < int(pub.DataSize); off += chunk {
		n := min(chunk, int(pub.DataSize)-off)
		rsp, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: pubRsp.NVName},
			Size:       uint16(n),
			Offset:     uint16(off),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("NV_Read %d bytes at %d: %w", n, off, err)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

// trimDER cuts an NV area to its DER object (NV areas may be padded).
func trimDER(b []byte) []byte {
	if len(b) < 4 || b[0] != 0x30 || b[1] != 0x82 {
		return b
	}
	n := 4 + int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b) {
		return b
	}
	return b[:n]
}

// readPCRs reads SHA-256 PCRs 0..n-1. A TPM returns at most 8 digests per
// PCR_Read; it asks again for the rest.
func readPCRs(t transport.TPM, n int) ([]*api.PCR, error) {
	values := make([][]byte, n)
	for {
		var want []uint
		for i, v := range values {
			if v == nil {
				want = append(want, uint(i))
			}
		}
		if len(want) == 0 {
			break
		}
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(want...)},
		}}}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read PCRs %v: %w", want, err)
		}
		got := 0
		for _, sel := range rsp.PCRSelectionOut.PCRSelections {
			if sel.Hash != tpm2.TPMAlgSHA256 {
				continue
			}
			for i := range n {
				if i/8 < len(sel.PCRSelect) && sel.PCRSelect[i/8]&(1<<(i%8)) != 0 {
					if got >= len(rsp.PCRValues.Digests) {
						return nil, fmt.Errorf("read PCRs: %d digests for a larger selection", len(rsp.PCRValues.Digests))
					}
					values[i] = rsp.PCRValues.Digests[got].Buffer
					got++
				}
			}
		}
		if got == 0 {
			return nil, fmt.Errorf("read PCRs %v: the TPM returned none (no SHA-256 bank?)", want)
		}
	}
	out := make([]*api.PCR, n)
	for i, v := range values {
		out[i] = &api.PCR{Index: uint32(i), Sha256: v}
	}
	return out, nil
}
