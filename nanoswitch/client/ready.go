package client

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/qcluster/qcluster/internal/atomicfile"
)

// Ready is what the nanoswitch command writes, as JSON, to its ready file
// once it serves; Open and Start read it.
type Ready struct {
	// PID of the nanoswitch process.
	PID int `json:"pid"`
	// Cluster name, domain, subnet ("10.42.0.0/24") and gateway address.
	Cluster string `json:"cluster"`
	Domain  string `json:"domain"`
	Subnet  string `json:"subnet"`
	Gateway string `json:"gateway"`
	// ControlSocket is the UNIX socket of the gRPC control API.
	ControlSocket string `json:"control_socket"`
	// SOCKSAddress is "127.0.0.1:PORT", empty without SOCKS5.
	SOCKSAddress string `json:"socks_address,omitempty"`
	// CredentialsFile holds the SOCKS5 credentials as "username:password"
	// (mode 0600), empty without SOCKS5.
	CredentialsFile string `json:"credentials_file,omitempty"`
	// Ports are the ports made at start-up, with their sockets.
	Ports []ReadyPort `json:"ports"`
}

// ReadyPort is one port in the ready file.
type ReadyPort struct {
	Name     string `json:"name"`               // port name (the node's)
	MAC      string `json:"mac"`                // the node's MAC, "52:54:00:…"
	Address  string `json:"address,omitempty"`  // its lease's address
	Hostname string `json:"hostname,omitempty"` // its lease's host name
	Socket   string `json:"socket"`             // the UNIX socket QEMU connects to
}

// WriteReady writes r to path atomically (a temporary file renamed into
// place), mode 0600.
func WriteReady(path string, r Ready) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write ready file %s: %w", path, err)
	}
	return writeFileAtomic(path, append(b, '\n'))
}

// ReadReady reads a ready file.
func ReadReady(path string) (Ready, error) {
	var r Ready
	b, err := os.ReadFile(path)
	if err != nil {
		return r, fmt.Errorf("read ready file: %w", err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("read ready file %s: %w", path, err)
	}
	if r.ControlSocket == "" {
		return r, fmt.Errorf("read ready file %s: no control_socket", path)
	}
	return r, nil
}

// WriteCredentials writes "username:password\n" to path, mode 0600,
// atomically.
func WriteCredentials(path, username, password string) error {
	if strings.Contains(username, ":") {
		return fmt.Errorf("write credentials %s: username %q contains ':'", path, username)
	}
	return writeFileAtomic(path, []byte(username+":"+password+"\n"))
}

// ReadCredentials reads a file written by WriteCredentials.
func ReadCredentials(path string) (username, password string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("read credentials: %w", err)
	}
	u, p, ok := strings.Cut(strings.TrimSuffix(string(b), "\n"), ":")
	if !ok {
		return "", "", fmt.Errorf("read credentials %s: want username:password", path)
	}
	return u, p, nil
}

func writeFileAtomic(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
