package cluster

import "time"

// EventKind says what an Event reports.
type EventKind int

const (
	// StepStarted: a named step of the launch begins.
	StepStarted EventKind = iota
	// StepDone: the step ended; Err is set if it failed.
	StepDone
	// NodeReady: Node passed its readiness probe, Elapsed after QEMU started.
	NodeReady
)

// Event is a progress report from Launch and from node lifecycle calls.
type Event struct {
	Kind    EventKind
	Step    string        // the step's name, e.g. "Synthesizing disks"
	Node    string        // for NodeReady
	Elapsed time.Duration // since the step (StepDone) or the node's QEMU (NodeReady) started
	Nodes   int           // for NodeReady: how many nodes the cluster has (a restore's options may not say)
	Err     error
}
