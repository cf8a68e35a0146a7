package nanoswitch

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Faults are applied per frame in the forwarding core, between the port a
// frame came from and each port it goes to. They hold until Heal.
//
//   - Partition(a, b): nothing passes between ports a and b, either way.
//   - Isolate(a): nothing passes between a and any other VM port; a keeps
//     the gateway (DHCP, DNS, host access). Add Partition(a, GatewayPort)
//     to cut that too.
//   - Degrade(a, d): frames to and from a are lost with d.LossPercent and
//     delayed by d.Delay. Between two degraded ports the delays add up and
//     a frame survives only if it survives both losses.

// faultTable is an immutable FaultState with fast lookups. The switch keeps
// the current one in an atomic pointer (nil: no faults) and replaces it
// whole on every change.
type faultTable struct {
	partitions map[[2]string]bool
	isolated   map[string]bool
	degraded   map[string]Degradation
}

func pair(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// verdict says whether a frame from port a to port b is dropped, and if not,
// how long it is held back.
func (t *faultTable) verdict(a, b string) (drop bool, delay time.Duration) {
	if t == nil {
		return false, 0
	}
	if t.partitions[pair(a, b)] {
		return true, 0
	}
	if (t.isolated[a] && b != GatewayPort) || (t.isolated[b] && a != GatewayPort) {
		return true, 0
	}
	da, db := t.degraded[a], t.degraded[b]
	if keep := (1 - da.LossPercent/100) * (1 - db.LossPercent/100); keep < 1 && rand.Float64() >= keep {
		return true, 0
	}
	return false, da.Delay + db.Delay
}

// clone returns a modifiable copy of t (an empty table for nil).
func (t *faultTable) clone() *faultTable {
	n := &faultTable{
		partitions: map[[2]string]bool{},
		isolated:   map[string]bool{},
		degraded:   map[string]Degradation{},
	}
	if t != nil {
		maps.Copy(n.partitions, t.partitions)
		maps.Copy(n.isolated, t.isolated)
		maps.Copy(n.degraded, t.degraded)
	}
	return n
}

func (t *faultTable) empty() bool {
	return len(t.partitions) == 0 && len(t.isolated) == 0 && len(t.degraded) == 0
}

// changeFaults applies change to a copy of the fault table and installs it,
// after checking that every named port exists.
func (s *Switch) changeFaults(what string, names []string, change func(t *faultTable)) error {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	for _, n := range names {
		if s.port(n) == nil {
			return fmt.Errorf("%s: %w %q", what, ErrNoPort, n)
		}
	}
	t := s.faults.Load().clone()
	change(t)
	if t.empty() {
		t = nil
	}
	s.faults.Store(t)
	s.cfg.Logger.Info("faults changed", "change", what)
	return nil
}

// Partition stops all traffic between ports a and b (either may be
// GatewayPort) until Heal.
func (s *Switch) Partition(a, b string) error {
	what := fmt.Sprintf("partition %s %s", a, b)
	if a == b {
		return fmt.Errorf("%s: a port cannot be partitioned from itself", what)
	}
	return s.changeFaults(what, []string{a, b}, func(t *faultTable) { t.partitions[pair(a, b)] = true })
}

// Isolate stops all traffic between port a and every other VM port until
// Heal; a still reaches the gateway.
func (s *Switch) Isolate(a string) error {
	if a == GatewayPort {
		return fmt.Errorf("isolate %s: the gateway cannot be isolated; partition it from ports instead", a)
	}
	return s.changeFaults("isolate "+a, []string{a}, func(t *faultTable) { t.isolated[a] = true })
}

// Degrade makes frames to and from port a lossy and slow until Heal, or
// until Degrade(a, Degradation{}) restores it.
func (s *Switch) Degrade(a string, d Degradation) error {
	what := fmt.Sprintf("degrade %s loss=%g%% delay=%s", a, d.LossPercent, d.Delay)
	if !(d.LossPercent >= 0 && d.LossPercent <= 100) {
		return fmt.Errorf("%s: loss must be between 0 and 100 percent", what)
	}
	if d.Delay < 0 || d.Delay > time.Minute {
		return fmt.Errorf("%s: delay must be between 0 and 1m", what)
	}
	return s.changeFaults(what, []string{a}, func(t *faultTable) {
		if d == (Degradation{}) {
			delete(t.degraded, a)
		} else {
			t.degraded[a] = d
		}
	})
}

// Heal removes every fault.
func (s *Switch) Heal() {
	_ = s.changeFaults("heal", nil, func(t *faultTable) { *t = faultTable{} })
}

// Faults returns the faults in force.
func (s *Switch) Faults() FaultState {
	t := s.faults.Load()
	st := FaultState{Degraded: map[string]Degradation{}}
	if t == nil {
		return st
	}
	for p := range t.partitions {
		st.Partitions = append(st.Partitions, p)
	}
	slices.SortFunc(st.Partitions, func(x, y [2]string) int {
		return cmp.Or(strings.Compare(x[0], y[0]), strings.Compare(x[1], y[1]))
	})
	st.Isolated = slices.Sorted(maps.Keys(t.isolated))
	maps.Copy(st.Degraded, t.degraded)
	return st
}
