package cluster

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/qcluster/qcluster/swtpm"
)

// manufactureTPMs makes the cluster's TPM CA and every node's TPM state.
func (c *Cluster) manufactureTPMs(ctx context.Context) error {
	if !c.needsTPM() {
		return nil
	}
	ca, err := newTPMCA(ctx, c, nil, nil)
	if err != nil {
		return err
	}
	c.tpmCA = ca
	return c.forEachNode(ctx, func(ctx context.Context, n *Node) error {
		if n.tpmState == "" {
			return nil
		}
		m, err := ca.Manufacture(ctx, n.tpmState, swtpm.ManufactureOptions{Name: n.Name})
		if err != nil {
			return fmt.Errorf("%s: manufacture TPM: %w", n.Name, err)
		}
		n.EKCertificate = m.EKCertRSA
		return nil
	})
}

// newTPMCA makes the cluster's TPM CA in its state directory, from the
// given certificate and key (a snapshot's) or anew.
func newTPMCA(ctx context.Context, c *Cluster, certPEM, keyPEM []byte) (*swtpm.CA, error) {
	ca, err := swtpm.NewCA(ctx, filepath.Join(c.StateDir, "tpm-ca"), swtpm.CAOptions{
		SetupBinary: c.host.swtpmSetup, TPMBinary: c.host.swtpm, Logger: c.opts.Logger,
		CertPEM: certPEM, KeyPEM: keyPEM,
	})
	if err != nil {
		return nil, fmt.Errorf("TPM CA: %w", err)
	}
	return ca, nil
}
