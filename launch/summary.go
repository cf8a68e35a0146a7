package main

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/qcluster/qcluster/cluster"
	"github.com/qcluster/qcluster/cluster/warm"
	"github.com/qcluster/qcluster/internal/atomicfile"
)

// summary is what --json writes and the table shows.
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

func summarize(c *cluster.Cluster, took time.Duration, res warm.Result) summary {
	s := summary{
		Name:       c.Name,
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
	fmt.Fprintf(w, "\nReach the nodes through SOCKS5 on %s (credentials in %s):\n", s.SOCKS5.Address, s.SOCKS5.CredentialsFile)
	fmt.Fprintf(w, "  source %s\n", s.EnvFile)
	if len(s.Nodes) > 0 {
		fmt.Fprintf(w, "  grpcurl -cacert \"$QCLUSTER_CA\" -cert \"$QCLUSTER_CERT\" -key \"$QCLUSTER_KEY\" %s:7443 list\n", s.Nodes[0].Address)
	}
	fmt.Fprintf(w, "  (grpcurl and curl honour ALL_PROXY=socks5://… from the env file)\n\n")
}

func writeJSON(path string, s summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}
