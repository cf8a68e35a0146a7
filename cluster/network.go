package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/nanoswitch/client"
)

// startNetwork starts the nanoswitch helper and writes the env file.
func (c *Cluster) startNetwork(ctx context.Context) error {
	o := client.Options{
		Command: c.host.switchCommand,
		Dir:     filepath.Join(c.sockDir, "net"),
		Cluster: c.Plan.Name,
		Domain:  c.Plan.Domain,
		Subnet:  c.Plan.Subnet,
		LogFile: filepath.Join(c.LogDir, "nanoswitch.log"),
	}
	// The plan owns every node's MAC and address; the switch is told.
	for _, n := range c.Plan.Nodes {
		o.Nodes = append(o.Nodes, client.Lease{MAC: n.MAC, Addr: n.Address, Hostname: n.Name})
	}
	nw, err := client.Start(ctx, o)
	if err != nil {
		return err
	}
	c.net = nw
	c.onUndo("stop nanoswitch", nw.Close)
	for _, n := range c.Nodes {
		if n.netSock, err = nw.Socket(n.Name); err != nil {
			return err
		}
	}
	ready := nw.Ready()
	c.SOCKS5 = SOCKS5{Address: ready.SOCKSAddress, CredentialsFile: ready.CredentialsFile}
	return c.writeEnv()
}

// writeEnv writes a shell file that points tools at the cluster.
func (c *Cluster) writeEnv() error {
	user, pass := "", ""
	if c.SOCKS5.CredentialsFile != "" {
		var err error
		if user, pass, err = client.ReadCredentials(c.SOCKS5.CredentialsFile); err != nil {
			return err
		}
	}
	c.SOCKS5.Username, c.SOCKS5.Password = user, pass
	var b strings.Builder
	fmt.Fprintf(&b, "# qcluster %s: source this file to reach the nodes.\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_NAME=%s\n", c.Name)
	fmt.Fprintf(&b, "export QCLUSTER_CA=%s\nexport QCLUSTER_CERT=%s\nexport QCLUSTER_KEY=%s\n", c.Files.CA, c.Files.ClientCert, c.Files.ClientKey)
	fmt.Fprintf(&b, "export QCLUSTER_SOCKS5=%s\n", c.SOCKS5.Address)
	// socks5h: names are resolved by the switch (node0, node0.<domain>).
	fmt.Fprintf(&b, "export ALL_PROXY=socks5h://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	// grpc-go (so grpcurl) speaks HTTP CONNECT to whatever HTTPS_PROXY
	// names; the same port answers it.
	fmt.Fprintf(&b, "export HTTPS_PROXY=http://%s:%s@%s\n", user, pass, c.SOCKS5.Address)
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "export QCLUSTER_%s=%s\n", strings.ToUpper(n.Name), n.Address)
	}
	return atomicfile.Write(c.Files.Env, []byte(b.String()), 0o600)
}
