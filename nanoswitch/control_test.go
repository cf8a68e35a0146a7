package nanoswitch

import (
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/nanoswitch/client"
)

// TestControl drives a switch through the gRPC control socket with Client,
// as cluster/ does with the nanoswitch command.
func TestControl(t *testing.T) {
	dir := t.TempDir()
	sw := newTestSwitch(t, Config{Name: "ctl", Dir: dir, ControlSocket: filepath.Join(dir, "control.sock"), SOCKS: true})
	info, _ := sw.SOCKS()
	ready := client.Ready{ControlSocket: filepath.Join(dir, "control.sock"), SOCKSAddress: info.Addr.String(),
		CredentialsFile: filepath.Join(dir, "socks.credentials")}
	if err := client.WriteCredentials(ready.CredentialsFile, info.Username, info.Password); err != nil {
		t.Fatal(err)
	}
	if err := client.WriteReady(filepath.Join(dir, "ready.json"), ready); err != nil {
		t.Fatal(err)
	}
	c, err := client.Open(filepath.Join(dir, "ready.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()

	path, err := c.AddPort(ctx, "node0", mac(1))
	if err != nil || path != filepath.Join(dir, "node0.sock") {
		t.Fatalf("AddPort: %q %v", path, err)
	}
	if _, err := c.AddPort(ctx, "node0", nil); status.Code(err) != codes.InvalidArgument {
		t.Errorf("second AddPort node0: %v", err)
	}
	if _, err := c.AddPort(ctx, "node1", nil); err != nil {
		t.Fatal(err)
	}
	l := Lease{MAC: mac(1), Addr: netip.MustParseAddr("10.42.0.10"), Hostname: "node0"}
	if err := c.AddLease(ctx, l); err != nil {
		t.Fatal(err)
	}
	if got := sw.Leases(); len(got) != 1 || got[0].Addr != l.Addr || got[0].MAC.String() != l.MAC.String() {
		t.Errorf("leases %+v", got)
	}
	if err := c.Partition(ctx, "node0", "node1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Isolate(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Degrade(ctx, "node0", Degradation{LossPercent: 5, Delay: 3 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Faults(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Partitions) != 1 || st.Partitions[0] != [2]string{"node0", "node1"} || len(st.Isolated) != 1 ||
		st.Degraded["node0"] != (Degradation{LossPercent: 5, Delay: 3 * time.Millisecond}) {
		t.Errorf("faults %+v", st)
	}
	if err := c.Partition(ctx, "node0", "node9"); status.Code(err) != codes.NotFound {
		t.Errorf("partition with a missing port: %v, want NotFound", err)
	}
	if err := c.Heal(ctx); err != nil {
		t.Fatal(err)
	}
	if st := sw.Faults(); len(st.Partitions)+len(st.Isolated)+len(st.Degraded) != 0 {
		t.Errorf("faults after heal: %+v", st)
	}
	ports, err := c.Ports(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ports) != 3 || ports[0].Name != GatewayPort || ports[1].Name != "node0" || ports[1].MAC.String() != mac(1).String() ||
		ports[1].SocketPath != path || ports[1].Connected {
		t.Errorf("ports %+v", ports)
	}
	// The client dials through SOCKS5; a refusal comes back as an error.
	if _, err := c.DialContext(ctx, "tcp", "127.0.0.1:22"); err == nil {
		t.Error("dial to the host through SOCKS5 succeeded")
	}
}
