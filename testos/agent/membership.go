package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/qcluster/qcluster/testos/api"
)

const (
	// heartbeatInterval is how often members send Heartbeat.
	heartbeatInterval = time.Second
	// missedHeartbeats is how many intervals without a heartbeat make a
	// member unhealthy.
	missedHeartbeats = 3
)

// errUnknownMember is returned for a heartbeat of a name that has not joined
// (or joined again as another node).
var errUnknownMember = errors.New("not a member: join first")

// roster is the leader's view of the cluster. It is a plain state machine
// over a clock, so tests drive it with a fake one.
type roster struct {
	mu       sync.Mutex
	now      func() time.Time
	interval time.Duration
	missed   int
	cluster  string
	leader   rosterEntry
	members  map[string]*rosterEntry
}

type rosterEntry struct {
	name, address, nodeID string
	bootCount             uint64
	last                  time.Time // last Join or Heartbeat
}

func newRoster(now func() time.Time, cluster string, leader rosterEntry) *roster {
	return &roster{now: now, interval: heartbeatInterval, missed: missedHeartbeats, cluster: cluster,
		leader: leader, members: map[string]*rosterEntry{}}
}

// join adds or replaces a member.
func (r *roster) join(req *api.JoinRequest) error {
	if req.GetName() == "" {
		return errors.New("join: empty name")
	}
	if req.GetClusterName() != r.cluster {
		return fmt.Errorf("join %s: cluster %q, this is cluster %q", req.GetName(), req.GetClusterName(), r.cluster)
	}
	if req.GetName() == r.leader.name {
		return fmt.Errorf("join %s: that is the leader's name", req.GetName())
	}
	if _, _, err := net.SplitHostPort(req.GetAddress()); err != nil {
		return fmt.Errorf("join %s: address %q: %w", req.GetName(), req.GetAddress(), err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members[req.GetName()] = &rosterEntry{name: req.GetName(), address: req.GetAddress(), nodeID: req.GetNodeId(),
		bootCount: req.GetBootCount(), last: r.now()}
	return nil
}

// heartbeat records a heartbeat; errUnknownMember asks the member to join.
func (r *roster) heartbeat(req *api.HeartbeatRequest) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.members[req.GetName()]
	if !ok || m.nodeID != req.GetNodeId() {
		return fmt.Errorf("heartbeat %s: %w", req.GetName(), errUnknownMember)
	}
	m.last = r.now()
	m.bootCount = req.GetBootCount()
	return nil
}

// list returns the leader and every member, sorted by name.
func (r *roster) list() []*api.Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := []*api.Member{{Name: r.leader.name, Address: r.leader.address, NodeId: r.leader.nodeID, Healthy: true,
		BootCount: r.leader.bootCount, Leader: true}}
	for _, m := range r.members {
		age := now.Sub(m.last)
		out = append(out, &api.Member{Name: m.name, Address: m.address, NodeId: m.nodeID, BootCount: m.bootCount,
			LastHeartbeatAgeMs: age.Milliseconds(), Healthy: age <= time.Duration(r.missed)*r.interval})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// membershipServer serves Membership from a roster.
type membershipServer struct {
	api.UnimplementedMembershipServer
	r *roster
}

func (s *membershipServer) Join(ctx context.Context, req *api.JoinRequest) (*api.JoinResponse, error) {
	if err := requirePeerName(ctx, req.GetName()); err != nil {
		return nil, err
	}
	if err := s.r.join(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &api.JoinResponse{LeaderName: s.r.leader.name, HeartbeatIntervalMs: s.r.interval.Milliseconds()}, nil
}

func (s *membershipServer) Heartbeat(ctx context.Context, req *api.HeartbeatRequest) (*api.HeartbeatResponse, error) {
	if err := requirePeerName(ctx, req.GetName()); err != nil {
		return nil, err
	}
	if err := s.r.heartbeat(req); err != nil {
		return nil, status.Error(codes.NotFound, err.Error())
	}
	return &api.HeartbeatResponse{}, nil
}

func (s *membershipServer) List(context.Context, *api.ListRequest) (*api.ListResponse, error) {
	return &api.ListResponse{Members: s.r.list()}, nil
}

// memberState is a member's side of the membership.
type memberState struct {
	cfg       *config
	tlsConfig *tls.Config // client side: node certificate, CA roots, leader name
	self      func() *api.JoinRequest

	mu       sync.Mutex
	joined   bool
	lastErr  string
	interval time.Duration
}

// status reports the member's view for Status.
func (m *memberState) status() *api.MembershipStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return &api.MembershipStatus{LeaderAddress: m.cfg.leaderAddress, Joined: m.joined, LastError: m.lastErr}
}

func (m *memberState) record(joined bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.joined = joined
	m.lastErr = ""
	if err != nil {
		m.lastErr = err.Error()
	}
}

// run joins the leader with backoff and heartbeats every interval; a
// heartbeat answered NOT_FOUND makes it join again. It returns with ctx.
func (m *memberState) run(ctx context.Context, log *slog.Logger) {
	conn, err := grpc.NewClient(m.cfg.leaderAddress, grpc.WithTransportCredentials(credentials.NewTLS(m.tlsConfig)))
	if err != nil {
		m.record(false, fmt.Errorf("dial leader %s: %w", m.cfg.leaderAddress, err))
		log.Error("membership: cannot dial the leader", "leader", m.cfg.leaderAddress, "err", err)
		return
	}
	defer conn.Close()
	client := api.NewMembershipClient(conn)
	for ctx.Err() == nil {
		if err := m.join(ctx, log, client); err != nil {
			return
		}
		m.heartbeats(ctx, log, client)
	}
}

// join calls Join until it succeeds (exponential backoff, 5 s cap).
func (m *memberState) join(ctx context.Context, log *slog.Logger, client api.MembershipClient) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	attempt := 0
	return backoff.Retry(func() error {
		attempt++
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		rsp, err := client.Join(cctx, m.self())
		if err != nil {
			m.record(false, fmt.Errorf("join %s: %w", m.cfg.leaderAddress, err))
			if attempt == 1 || attempt%10 == 0 {
				log.Warn("membership: join failed, retrying", "leader", m.cfg.leaderAddress, "attempt", attempt, "err", err)
			}
			return err
		}
		m.mu.Lock()
		m.interval = time.Duration(rsp.GetHeartbeatIntervalMs()) * time.Millisecond
		if m.interval <= 0 {
			m.interval = heartbeatInterval
		}
		m.mu.Unlock()
		m.record(true, nil)
		log.Info("membership: joined", "leader", rsp.GetLeaderName(), "address", m.cfg.leaderAddress)
		return nil
	}, backoff.WithContext(b, ctx))
}

// heartbeats sends Heartbeat every interval until the leader forgets this
// node (NOT_FOUND) or ctx ends.
func (m *memberState) heartbeats(ctx context.Context, log *slog.Logger, client api.MembershipClient) {
	m.mu.Lock()
	interval := m.interval
	m.mu.Unlock()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		self := m.self()
		cctx, cancel := context.WithTimeout(ctx, interval)
		_, err := client.Heartbeat(cctx, &api.HeartbeatRequest{Name: self.Name, NodeId: self.NodeId, BootCount: self.BootCount})
		cancel()
		if status.Code(err) == codes.NotFound {
			m.record(false, err)
			log.Warn("membership: the leader does not know this node; joining again", "err", err)
			return
		}
		m.record(err == nil, err)
	}
}
