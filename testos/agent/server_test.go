package main

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/qcluster/qcluster/testos/api"
)

// TestReadyTimeSetBeforeServing calls Status while serve starts the real
// gRPC server on loopback: the first answer carries the ready time, and
// under -race the handler's read of it is ordered after its write.
func TestReadyTimeSetBeforeServing(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{InsecureSkipVerify: true}))) // self-signed: no parameters
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	answered := make(chan *api.StatusResponse, 1)
	go func() {
		defer close(answered)
		// Waits for the server rather than failing while it is not up.
		st, err := api.NewNodeServiceClient(conn).Status(ctx, &api.StatusRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Errorf("Status: %v", err)
			return
		}
		answered <- st
	}()
	n := &node{cfg: &config{nodeName: "n0", clusterName: "c", role: api.Role_ROLE_BOOTSTRAP}}
	srv, err := n.serve(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), lis)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.stop()
	if st := <-answered; st != nil && st.GetReadyMs() <= 0 {
		t.Errorf("Status answered with ready_ms %d, want the ready time", st.GetReadyMs())
	}
}
