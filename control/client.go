package control

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qcluster/qcluster/control/api"
)

// Client calls a cluster's control API.
type Client struct {
	api.ControlClient
	// Entry is the cluster's registry entry.
	Entry Entry
	conn  *grpc.ClientConn
}

// Dial returns a client of the cluster e describes. The socket is the
// user's own (mode 0600), so the connection needs no transport security.
func Dial(e Entry) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+e.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("control socket of %s: %w", e.Name, err)
	}
	return &Client{ControlClient: api.NewControlClient(conn), Entry: e, conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }
