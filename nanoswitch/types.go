package nanoswitch

import "github.com/qcluster/qcluster/nanoswitch/client"

// The control API's types live with the client, which does not link the
// switch; these names keep the switch's own API whole.
type (
	Lease       = client.Lease
	Degradation = client.Degradation
	FaultState  = client.FaultState
	Counters    = client.Counters
	PortStatus  = client.PortStatus
)
