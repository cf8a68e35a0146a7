package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/warm"
	"github.com/qcluster/qcluster/control/api"
	"github.com/qcluster/qcluster/internal/atomicfile"
	"github.com/qcluster/qcluster/testos/profile"
)

// summary is what --json writes, status --json prints and the table shows.
type summary struct {
	Name       string  `json:"name"`
	StateDir   string  `json:"state_dir"`
	LogDir     string  `json:"log_dir"`
	LaunchSecs float64 `json:"launch_seconds"`
	// Restored says the cluster was restored from RestoredFrom, a snapshot
	// or a cached template (TemplateMade: made by this launch first).
	Restored     bool    `json:"restored"`
	RestoredFrom string  `json:"restored_from,omitempty"`
	TemplateMade bool    `json:"template_made,omitempty"`
	TemplateSecs float64 `json:"template_seconds,omitempty"`
	// Snapshot is what --snapshot wrote.
	Snapshot   *snapshotSummary `json:"snapshot,omitempty"`
	Accel      string           `json:"accelerator"`
	Ready      string           `json:"ready"` // the --ready probe, for example commands
	PID        int              `json:"pid"`   // the launcher's
	SOCKS5     socksSummary     `json:"socks5"`
	CA         string           `json:"ca_cert"`
	ClientCert string           `json:"client_cert"`
	ClientKey  string           `json:"client_key"`
	EnvFile    string           `json:"env_file"`
	Nodes      []nodeSummary    `json:"nodes"`
}

type snapshotSummary struct {
	Dir        string  `json:"dir"`
	Seconds    float64 `json:"seconds"`        // Snapshot's call, start to end
	Paused     float64 `json:"paused_seconds"` // how long the nodes were stopped
	Bytes      int64   `json:"bytes"`          // on disk (allocated)
	StateBytes int64   `json:"state_bytes"`    // the migration streams
}

// socksSummary is the host-access proxy, which speaks SOCKS5 and HTTP
// CONNECT on one port (the JSON name predates CONNECT).
type socksSummary struct {
	Address         string `json:"address"`
	CredentialsFile string `json:"credentials_file"`
}

type nodeSummary struct {
	Name      string  `json:"name"`
	FQDN      string  `json:"fqdn"`
	Address   string  `json:"address"`
	MAC       string  `json:"mac"`
	State     string  `json:"state"`
	TPM       bool    `json:"tpm"`
	EKSHA256  string  `json:"tpm_ek_certificate_sha256,omitempty"`
	DiskSecs  float64 `json:"disk_ready_seconds"`
	StartSecs float64 `json:"qemu_started_seconds"`
	// For a restored node, since its QEMU started: its state was loaded,
	// and it resumed.
	LoadedSecs  float64 `json:"state_loaded_seconds,omitempty"`
	ResumedSecs float64 `json:"resumed_seconds,omitempty"`
	ReadySecs   float64 `json:"ready_seconds"`
	SerialLog   string  `json:"serial_log"`
	CommandLine string  `json:"command_line"`
}

func summarize(c *cluster.Cluster, ready string, took time.Duration, res warm.Result) summary {
	s := summary{
		Name:       c.Name,
		Ready:      ready,
		PID:        os.Getpid(),
		StateDir:   c.StateDir,
		LogDir:     c.LogDir,
		LaunchSecs: took.Seconds(),
		Accel:      c.Accel,
		SOCKS5:     socksSummary{Address: c.SOCKS5.Address, CredentialsFile: c.SOCKS5.CredentialsFile},
		CA:         c.Files.CA,
		ClientCert: c.Files.ClientCert,
		ClientKey:  c.Files.ClientKey,
		EnvFile:    c.Files.Env,

		Restored:     c.RestoredFrom != "",
		RestoredFrom: c.RestoredFrom,
		TemplateMade: res.Made,
		TemplateSecs: res.MakeTime.Seconds(),
	}
	for _, n := range c.Nodes {
		t := n.Timings()
		s.Nodes = append(s.Nodes, nodeSummary{
			Name: n.Name, FQDN: n.FQDN, Address: n.Address.String(), MAC: n.MAC.String(),
			State: n.State().String(), TPM: !n.Options.NoTPM,
			DiskSecs: t.DiskReady.Seconds(), StartSecs: t.QEMUStarted.Seconds(), ReadySecs: t.Ready.Seconds(),
			LoadedSecs: t.StateLoaded.Seconds(), ResumedSecs: t.Resumed.Seconds(),
			SerialLog: n.SerialLog, CommandLine: n.CommandLineFile,
		})
		if n.EKCertificate != nil {
			s.Nodes[len(s.Nodes)-1].EKSHA256 = fmt.Sprintf("%x", sha256.Sum256(n.EKCertificate))
		}
	}
	return s
}

func printSummary(w io.Writer, s summary) {
	how := ""
	if s.Restored {
		how = ", restored from " + s.RestoredFrom
		if s.TemplateMade {
			how += fmt.Sprintf(" (template made first in %.1fs)", s.TemplateSecs)
		}
	}
	fmt.Fprintf(w, "\nCluster %q is ready (%s, %.1fs%s).\n\n", s.Name, s.Accel, s.LaunchSecs, how)
	printBody(w, s)
}

// summaryOf turns the control API's status into the summary.
func summaryOf(st *api.ClusterStatus) summary {
	s := summary{
		Name: st.Name, StateDir: st.StateDir, LogDir: st.LogDir, LaunchSecs: st.LaunchSeconds, Accel: st.Accelerator,
		Ready: st.Ready, PID: int(st.Pid),
		SOCKS5: socksSummary{Address: st.ProxyAddress, CredentialsFile: st.CredentialsFile},
		CA:     st.CaCert, ClientCert: st.ClientCert, ClientKey: st.ClientKey, EnvFile: st.EnvFile,
	}
	for _, n := range st.Nodes {
		s.Nodes = append(s.Nodes, nodeSummary{
			Name: n.Name, FQDN: n.Fqdn, Address: n.Address, MAC: n.Mac, State: n.State, TPM: n.Tpm,
			EKSHA256: n.TpmEkCertificateSha256, DiskSecs: n.DiskReadySeconds, StartSecs: n.QemuStartedSeconds,
			ReadySecs: n.ReadySeconds, SerialLog: n.SerialLog, CommandLine: n.CommandLine,
		})
	}
	return s
}

// printStatus is what status prints.
func printStatus(w io.Writer, s summary) {
	fmt.Fprintf(w, "Cluster %q (%s, launcher pid %d, state %s)\n\n", s.Name, s.Accel, s.PID, s.StateDir)
	printBody(w, s)
}

func printBody(w io.Writer, s summary) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tTPM\tREADY\tSERIAL LOG")
	for _, n := range s.Nodes {
		tpm := "yes"
		if !n.TPM {
			tpm = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.1fs\t%s\n", n.Name, n.Address, n.State, tpm, n.ReadySecs, n.SerialLog)
	}
	tw.Flush()
	if len(s.Nodes) == 0 {
		return
	}
	fmt.Fprintf(w, "\nReach the nodes through the proxy on %s (SOCKS5 and HTTP CONNECT; credentials in %s):\n", s.SOCKS5.Address, s.SOCKS5.CredentialsFile)
	for _, l := range exampleLines(s, self()) {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintln(w)
}

// exampleLines are commands that work as printed for the cluster's
// readiness probe: a client of the port the nodes are known to serve.
func exampleLines(s summary, self string) []string {
	n0 := s.Nodes[0]
	lines := []string{"source " + s.EnvFile}
	kind, arg, _ := strings.Cut(s.Ready, ":")
	port, tlsOpt, _ := strings.Cut(arg, ":")
	switch kind {
	case "testos", "":
		lines = append(lines, fmt.Sprintf(`grpcurl -cacert "$QCLUSTER_CA" -cert "$QCLUSTER_CERT" -key "$QCLUSTER_KEY" %s:%d list`, n0.Address, profile.DefaultPort))
	case "grpc-health":
		sec := "-plaintext"
		if tlsOpt == "tls" {
			sec = "-insecure"
		}
		lines = append(lines, fmt.Sprintf("grpcurl %s %s:%s grpc.health.v1.Health/Check", sec, n0.Address, port))
	case "tcp":
		if port == "22" {
			lines = append(lines, fmt.Sprintf("ssh -o ProxyCommand='%s connect %s %%h %%p' %s", self, s.Name, n0.Name))
		} else {
			lines = append(lines, fmt.Sprintf("%s connect %s %s %s", self, s.Name, n0.Name, port))
		}
	}
	return append(lines, fmt.Sprintf("%s console %s %s    (Ctrl-] detaches)", self, s.Name, n0.Name))
}

// self is how the user ran this command, for example lines: the path they
// typed, or "cluster" when it is not a stable path (go run).
func self() string {
	a := os.Args[0]
	if !strings.Contains(a, "/") || strings.Contains(a, "go-build") {
		return "cluster"
	}
	return a
}

func writeJSON(path string, s summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}
