package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Profile is what cluster needs to know about a guest OS. cluster knows no
// particular OS: testos/profile implements this for the default image, and
// the generic profiles below serve images cluster knows nothing about.
type Profile interface {
	// Parameters returns the bytes handed to the node through QEMU's fw_cfg
	// as opt/qcluster/parameters; nil hands nothing.
	Parameters(p *Plan, node *NodePlan) ([]byte, error)
	// Probe checks once whether the node is ready and returns nil if so.
	// Launch calls it with backoff until it succeeds or the node fails.
	Probe(ctx context.Context, c *Cluster, node *Node) error
}

// Shutdowner is implemented by profiles that can ask a node to power off or
// reboot through its own API. Without it (or when it fails) cluster presses
// the ACPI power button.
type Shutdowner interface {
	Shutdown(ctx context.Context, c *Cluster, node *Node, reboot bool) error
}

// FailureMatcher is implemented by profiles that know console lines meaning
// the node will never become ready, beyond the generic ones (kernel panic,
// the EFI shell, a refused image).
type FailureMatcher interface {
	ConsoleFailures() []*regexp.Regexp
}

// genericFailures are console lines after which no OS becomes ready.
var genericFailures = []string{
	`Kernel panic - not syncing`,
	`UEFI Interactive Shell`,
	`Shell> `,
	`Access Denied`,
	`No bootable option or device was found`,
}

// ErrNotReady is wrapped by probes whose node is not ready yet.
var ErrNotReady = errors.New("not ready")

// GRPCHealthProfile judges readiness by the standard gRPC health service on
// port, through the cluster's network. With TLS the cluster's owner
// certificate is presented and the node's certificate checked against the
// cluster CA — which only an OS that takes cluster's parameters can have, so
// for foreign images TLS is usually false.
type GRPCHealthProfile struct {
	Port int
	TLS  bool
}

// Parameters hands nothing to the node.
func (GRPCHealthProfile) Parameters(*Plan, *NodePlan) ([]byte, error) { return nil, nil }

// Probe calls grpc.health.v1.Health/Check with an empty service name.
func (g GRPCHealthProfile) Probe(ctx context.Context, c *Cluster, n *Node) error {
	creds := insecure.NewCredentials()
	if g.TLS {
		creds = credentials.NewTLS(c.ClientTLS(n.Name))
	}
	conn, err := c.dialGRPC(n, g.Port, creds)
	if err != nil {
		return err
	}
	defer conn.Close()
	return CheckHealth(ctx, conn)
}

// CheckHealth returns nil if conn's server reports SERVING.
func CheckHealth(ctx context.Context, conn *grpc.ClientConn) error {
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check: %s: %w", resp.Status, ErrNotReady)
	}
	return nil
}

// TCPProfile judges readiness by a TCP port accepting a connection.
type TCPProfile struct{ Port int }

// Parameters hands nothing to the node.
func (TCPProfile) Parameters(*Plan, *NodePlan) ([]byte, error) { return nil, nil }

// Probe dials the port through the cluster's network.
func (t TCPProfile) Probe(ctx context.Context, c *Cluster, n *Node) error {
	conn, err := c.DialContext(ctx, "tcp", net.JoinHostPort(n.Address.String(), strconv.Itoa(t.Port)))
	if err != nil {
		return fmt.Errorf("dial port %d: %w", t.Port, err)
	}
	return conn.Close()
}

// ConsoleProfile judges readiness by a line on the node's serial console.
type ConsoleProfile struct{ Ready *regexp.Regexp }

// Parameters hands nothing to the node.
func (ConsoleProfile) Parameters(*Plan, *NodePlan) ([]byte, error) { return nil, nil }

// Probe looks for the pattern in what the console printed so far.
func (p ConsoleProfile) Probe(ctx context.Context, c *Cluster, n *Node) error {
	if n.consoleSeen(p.Ready) {
		return nil
	}
	return fmt.Errorf("console has not printed %q: %w", p.Ready, ErrNotReady)
}

// clientTLS is the owner's side of mutual TLS with a node.
func clientTLS(pki *PKI, owner Identity, serverName string) *tls.Config {
	cert, _ := owner.TLSCertificate() // made by us a moment ago; cannot fail
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pki.CAPool(),
		ServerName:   serverName,
		MinVersion:   tls.VersionTLS13,
	}
}
