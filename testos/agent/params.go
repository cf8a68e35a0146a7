package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/qcluster/qcluster/testos/api"
)

// paramsPath is where the qemu_fw_cfg module exposes the launcher's parameters.
const paramsPath = "/sys/firmware/qemu_fw_cfg/by_name/" + api.ParametersFwCfgName + "/raw"

// config is the node's effective configuration: the parameters with every
// default filled in.
type config struct {
	// fromParams is false when the node booted without parameters.
	fromParams    bool
	nodeName      string
	clusterName   string
	role          api.Role
	leaderAddress string
	leaderName    string
	listenPort    uint16
	hostname      string
	domain        string
	logLevel      uint32
	entropySeed   []byte
	caPEM         string
	certPEM       string
	keyPEM        string
}

// readParams reads the parameters file; a missing file means no parameters
// (nil, nil).
func readParams(path string) (*api.Parameters, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read parameters: %w", err)
	}
	return parseParams(b)
}

// parseParams decodes protojson parameters; unknown fields are an error.
func parseParams(b []byte) (*api.Parameters, error) {
	p := &api.Parameters{}
	if err := protojson.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("parse parameters (%d bytes of protojson): %w", len(b), err)
	}
	return p, nil
}

// newConfig validates p (nil: no parameters) and fills in defaults. mac is the
// NIC's hardware address, used for the default name.
func newConfig(p *api.Parameters, mac net.HardwareAddr) (*config, error) {
	c := &config{listenPort: api.DefaultListenPort}
	if p == nil {
		p = &api.Parameters{}
	} else {
		c.fromParams = true
	}
	c.nodeName = p.GetNodeName()
	if c.nodeName == "" {
		c.nodeName = "node-" + strings.ReplaceAll(mac.String(), ":", "")
		if len(mac) == 0 {
			c.nodeName = "node"
		}
	}
	if !validHostname(c.nodeName) {
		return nil, fmt.Errorf("parameters: node_name %q is not a valid host name (letters, digits, '-', '.', at most 63 per label)", c.nodeName)
	}
	c.clusterName = p.GetClusterName()
	c.leaderAddress = p.GetLeaderAddress()
	c.role = p.GetRole()
	if c.role == api.Role_ROLE_UNSPECIFIED {
		c.role = api.Role_ROLE_BOOTSTRAP
		if c.leaderAddress != "" {
			c.role = api.Role_ROLE_MEMBER
		}
	}
	if c.role != api.Role_ROLE_BOOTSTRAP && c.role != api.Role_ROLE_MEMBER {
		return nil, fmt.Errorf("parameters: unknown role %d", c.role)
	}
	if c.role == api.Role_ROLE_MEMBER {
		host, _, err := net.SplitHostPort(c.leaderAddress)
		if err != nil || host == "" {
			return nil, fmt.Errorf("parameters: role member needs leader_address host:port, have %q", c.leaderAddress)
		}
		c.leaderName = p.GetLeaderName()
		if c.leaderName == "" {
			c.leaderName = host
		}
	}
	if port := p.GetListenPort(); port != 0 {
		if port > 65535 {
			return nil, fmt.Errorf("parameters: listen_port %d is not a TCP port", port)
		}
		c.listenPort = uint16(port)
	}
	c.hostname = p.GetHostname()
	if c.hostname == "" {
		c.hostname = c.nodeName
	}
	if !validHostname(c.hostname) {
		return nil, fmt.Errorf("parameters: hostname %q is not a valid host name", c.hostname)
	}
	c.domain = p.GetDomain()
	if c.domain != "" && !validHostname(c.domain) {
		return nil, fmt.Errorf("parameters: domain %q is not a valid domain name", c.domain)
	}
	c.logLevel = p.GetKernelLogLevel()
	if c.logLevel > 8 {
		return nil, fmt.Errorf("parameters: kernel_log_level %d is above 8", c.logLevel)
	}
	c.entropySeed = p.GetEntropySeed()
	if t := p.GetTls(); t != nil {
		c.caPEM, c.certPEM, c.keyPEM = t.GetCaCertPem(), t.GetCertPem(), t.GetKeyPem()
		if c.caPEM == "" || c.certPEM == "" || c.keyPEM == "" {
			return nil, errors.New("parameters: tls needs ca_cert_pem, cert_pem and key_pem together")
		}
	}
	if c.role == api.Role_ROLE_MEMBER && c.caPEM == "" {
		return nil, errors.New("parameters: role member needs tls (the leader verifies members by their certificates)")
	}
	return c, nil
}

// validHostname reports whether s is a DNS name of letters, digits and
// hyphens, labels of 1–63 bytes, at most 253 bytes in all.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// listenAddr is the gRPC listen address on every interface.
func (c *config) listenAddr() string {
	return ":" + strconv.Itoa(int(c.listenPort))
}

// advertise is the host:port members give the leader.
func (c *config) advertise(ip netip.Addr) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(int(c.listenPort)))
}
