// Package profile tells cluster/ how to run the default node OS, testos: the
// parameters each node is given (name, role, the leader's address, its TLS
// identity and the cluster CA), how readiness is judged (the agent's gRPC
// health service over mutual TLS, and for members, being listed healthy by
// the leader), how a node is asked to reboot or power off (the agent's
// Management service), and which console lines mean it never will be ready.
package profile

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/testos/api"
)

// DefaultPort is the agent's gRPC port.
const DefaultPort = api.DefaultListenPort

// Profile is the testos profile. The zero value is ready to use.
type Profile struct {
	// Port the agent serves gRPC on. Default: DefaultPort.
	Port int
	// HealthOnly judges readiness by the health service alone, without
	// waiting for membership. Default: false.
	HealthOnly bool
}

var (
	_ cluster.Profile        = (*Profile)(nil)
	_ cluster.Shutdowner     = (*Profile)(nil)
	_ cluster.FailureMatcher = (*Profile)(nil)
	_ cluster.Restorer       = (*Profile)(nil)
)

func (p *Profile) port() int {
	if p == nil || p.Port == 0 {
		return DefaultPort
	}
	return p.Port
}

// Parameters returns node's api.Parameters as protojson. Node 0 bootstraps
// the cluster; the others join it.
func (p *Profile) Parameters(plan *cluster.Plan, node *cluster.NodePlan) ([]byte, error) {
	leader := plan.Nodes[0]
	role := api.Role_ROLE_MEMBER
	if node.Index == 0 {
		role = api.Role_ROLE_BOOTSTRAP
	}
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("entropy seed for %s: %w", node.Name, err)
	}
	params := &api.Parameters{
		NodeName:      node.Name,
		ClusterName:   plan.Name,
		Role:          role,
		LeaderAddress: net.JoinHostPort(leader.Address.String(), strconv.Itoa(p.port())),
		LeaderName:    leader.Name,
		ListenPort:    uint32(p.port()),
		Tls: &api.TLS{
			CaCertPem: string(plan.PKI.CAPEM),
			CertPem:   string(node.Identity.CertPEM),
			KeyPem:    string(node.Identity.KeyPEM),
		},
		Hostname:    node.Name,
		Domain:      plan.Domain,
		EntropySeed: seed,
	}
	b, err := protojson.Marshal(params)
	if err != nil {
		return nil, fmt.Errorf("parameters for %s: %w", node.Name, err)
	}
	return b, nil
}

// Probe is ready when the node's health service answers SERVING and, for a
// member, the leader lists it as healthy.
func (p *Profile) Probe(ctx context.Context, c *cluster.Cluster, node *cluster.Node) error {
	conn, err := c.GRPC(node.Index, p.port())
	if err != nil {
		return err
	}
	if err := cluster.CheckHealth(ctx, conn); err != nil {
		return err
	}
	if p.HealthOnly || node.Index == 0 {
		return nil
	}
	leader, err := c.GRPC(0, p.port())
	if err != nil {
		return err
	}
	list, err := api.NewMembershipClient(leader).List(ctx, &api.ListRequest{})
	if err != nil {
		return fmt.Errorf("membership at %s: %w", c.Nodes[0].Name, err)
	}
	for _, m := range list.Members {
		if m.Name == node.Name && m.Healthy {
			return nil
		}
	}
	return fmt.Errorf("%s does not list %s as healthy yet: %w", c.Nodes[0].Name, node.Name, cluster.ErrNotReady)
}

// Shutdown asks the agent to reboot or power off.
func (p *Profile) Shutdown(ctx context.Context, c *cluster.Cluster, node *cluster.Node, reboot bool) error {
	conn, err := c.GRPC(node.Index, p.port())
	if err != nil {
		return err
	}
	m := api.NewManagementClient(conn)
	if reboot {
		_, err = m.Reboot(ctx, &api.RebootRequest{})
	} else {
		_, err = m.PowerOff(ctx, &api.PowerOffRequest{})
	}
	if err != nil {
		return fmt.Errorf("ask %s to shut down: %w", node.Name, err)
	}
	return nil
}

// AfterRestore steps the node's clock to the host's and gives it fresh
// entropy (Management.Restored): a restored node's wall clock lags by the
// snapshot's age, and its random pool is the template's.
func (p *Profile) AfterRestore(ctx context.Context, c *cluster.Cluster, node *cluster.Node) error {
	conn, err := c.GRPC(node.Index, p.port())
	if err != nil {
		return err
	}
	// The first call on a connection pays for its TLS handshake; the time
	// sent must not wait behind it.
	if err := cluster.CheckHealth(ctx, conn); err != nil {
		return err
	}
	seed := make([]byte, 64)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	_, err = api.NewManagementClient(conn).Restored(ctx, &api.RestoredRequest{UnixNanos: time.Now().UnixNano(), Entropy: seed})
	if status.Code(err) == codes.Unimplemented {
		return nil // an agent from before snapshots: its clock lags
	}
	if err != nil {
		return fmt.Errorf("tell %s it was restored: %w", node.Name, err)
	}
	return nil
}

// ConsoleFailures are the agent's fatal line and dm-verity's corruption report.
func (p *Profile) ConsoleFailures() []*regexp.Regexp {
	return []*regexp.Regexp{
		regexp.MustCompile(regexp.QuoteMeta(api.FatalPrefix) + `.*`),
		regexp.MustCompile(`device-mapper: verity: .*data block .* is corrupted`),
	}
}
