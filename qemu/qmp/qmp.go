// Package qmp is a client of the QEMU Machine Protocol (docs/interop/qmp-spec
// in QEMU's sources): JSON objects over a stream socket, a greeting, a
// capabilities handshake, commands with ids answered in any order, and
// asynchronous events. It knows nothing of how QEMU was started; package
// qemu uses it for the supervisor's private monitor, and anyone can use it
// for the extra QMP socket of a machine.
//
// Limits: no out-of-band execution; no file-descriptor passing (getfd).
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrClosed is wrapped by the client's errors once the connection has ended
// (QEMU exited).
var ErrClosed = errors.New("qmp connection closed")

// Client is a QMP connection. It is safe for concurrent use.
type Client struct {
	conn    net.Conn
	onEvent func(Event) // called in the reader, before subscribers

	wmu sync.Mutex // serializes writes

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan message
	subs    map[chan Event]struct{}
	closed  bool
	err     error         // why the reader stopped
	greeted chan struct{} // closed when QEMU's greeting arrived
	done    chan struct{} // closed when the reader stopped
}

// Event is an asynchronous QMP event, e.g. SHUTDOWN, RESET, STOP, RESUME.
type Event struct {
	Name string          // e.g. "SHUTDOWN"
	Data json.RawMessage // the event's data, e.g. {"guest":true,"reason":"guest-shutdown"}
	Time time.Time       // QEMU's timestamp
}

// Error is an error QEMU returned for a command.
type Error struct {
	Command string
	Class   string `json:"class"` // e.g. "GenericError", "CommandNotFound"
	Desc    string `json:"desc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

type message struct {
	Greeting  json.RawMessage `json:"QMP"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
	ID     json.RawMessage `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
}

// New starts reading conn; Handshake must follow before commands. onEvent,
// if not nil, sees every event first, in the reader goroutine (it must not
// block). The client closes conn when the stream ends.
func New(conn net.Conn, onEvent func(Event)) *Client {
	q := &Client{conn: conn, onEvent: onEvent, pending: map[string]chan message{},
		subs: map[chan Event]struct{}{}, greeted: make(chan struct{}), done: make(chan struct{})}
	go q.read(json.NewDecoder(conn))
	return q
}

// Dial connects to a QMP server socket (such as qemu.Machine.QMPSocket) and
// shakes hands within ctx.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: %w", err)
	}
	q := New(conn, nil)
	if err := q.Handshake(ctx); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

// Handshake waits for QEMU's greeting and leaves capabilities negotiation
// mode, so that commands and events flow.
func (q *Client) Handshake(ctx context.Context) error {
	select {
	case <-q.greeted:
	case <-q.done:
		return fmt.Errorf("qmp handshake: %w", ErrClosed)
	case <-ctx.Done():
		return fmt.Errorf("qmp handshake: wait for greeting: %w", ctx.Err())
	}
	return q.Execute(ctx, "qmp_capabilities", nil, nil)
}

func (q *Client) read(dec *json.Decoder) {
	var err error
	for {
		var m message
		if err = dec.Decode(&m); err != nil {
			break
		}
		if m.Greeting != nil {
			select {
			case <-q.greeted:
			default:
				close(q.greeted)
			}
			continue
		}
		if m.Event != "" {
			ev := Event{Name: m.Event, Data: m.Data,
				Time: time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)}
			if q.onEvent != nil {
				q.onEvent(ev)
			}
			q.mu.Lock()
			for ch := range q.subs {
				select {
				case ch <- ev:
				default: // a subscriber that does not keep up loses events
				}
			}
			q.mu.Unlock()
			continue
		}
		var id string
		if json.Unmarshal(m.ID, &id) != nil {
			continue
		}
		q.mu.Lock()
		if ch, ok := q.pending[id]; ok {
			ch <- m
			delete(q.pending, id)
		}
		q.mu.Unlock()
	}
	// QEMU exiting ends the stream; with unread input on its side the
	// kernel reports that as a reset rather than EOF.
	if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		err = nil
	}
	q.mu.Lock()
	q.closed, q.err = true, err
	for ch := range q.subs {
		close(ch)
	}
	clear(q.subs)
	q.mu.Unlock()
	q.conn.Close()
	close(q.done)
}

// Subscribe returns a channel of the events from now on, closed when the
// connection ends or cancel is called. It holds 64 events; a subscriber that
// falls further behind loses events.
func (q *Client) Subscribe() (events <-chan Event, cancel func()) {
	ch := make(chan Event, 64)
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		close(ch)
		return ch, func() {}
	}
	q.subs[ch] = struct{}{}
	return ch, func() {
		q.mu.Lock()
		defer q.mu.Unlock()
		if _, ok := q.subs[ch]; ok {
			delete(q.subs, ch)
			close(ch)
		}
	}
}

// Execute runs command with args (nil for none) and decodes its return value
// into result (nil to ignore it). A command QEMU refused returns a *Error.
//
// A context that ends before the command is sent keeps it from QEMU; one
// that ends later only stops the wait, and QEMU still runs the command.
func (q *Client) Execute(ctx context.Context, command string, args, result any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	ch := make(chan message, 1)
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, ErrClosed)
	}
	q.nextID++
	id := strconv.FormatUint(q.nextID, 10)
	q.pending[id] = ch
	q.mu.Unlock()
	forget := func() {
		q.mu.Lock()
		delete(q.pending, id)
		q.mu.Unlock()
	}
	req, err := json.Marshal(struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id})
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: encode arguments: %w", command, err)
	}
	q.wmu.Lock()
	_, err = q.conn.Write(append(req, '\n'))
	q.wmu.Unlock()
	if err != nil {
		forget()
		return fmt.Errorf("qmp %s: %w: %w", command, ErrClosed, err)
	}
	var m message
	select {
	case m = <-ch:
	case <-ctx.Done():
		forget()
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case <-q.done:
		select {
		case m = <-ch:
		default:
			return fmt.Errorf("qmp %s: %w", command, ErrClosed)
		}
	}
	if m.Error != nil {
		m.Error.Command = command
		return m.Error
	}
	if result != nil {
		if err := json.Unmarshal(m.Return, result); err != nil {
			return fmt.Errorf("qmp %s: decode return value: %w", command, err)
		}
	}
	return nil
}

// SystemPowerdown presses the ACPI power button. The guest decides what to
// do: a guest that does not handle the button (no ACPI button driver, or
// nothing listening for KEY_POWER) keeps running.
func (q *Client) SystemPowerdown(ctx context.Context) error {
	return q.Execute(ctx, "system_powerdown", nil, nil)
}

// SystemReset resets the machine like its reset button. Under -no-reboot
// QEMU then exits (SHUTDOWN event, reason host-qmp-system-reset); otherwise
// the machine restarts in place (RESET event).
func (q *Client) SystemReset(ctx context.Context) error {
	return q.Execute(ctx, "system_reset", nil, nil)
}

// Quit makes QEMU exit at once, without the guest's cooperation. The
// connection ending before the reply counts as success.
func (q *Client) Quit(ctx context.Context) error {
	err := q.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// Stop pauses the guest's CPUs.
func (q *Client) Stop(ctx context.Context) error { return q.Execute(ctx, "stop", nil, nil) }

// Cont resumes the guest's CPUs, also from the prelaunch state of -S.
func (q *Client) Cont(ctx context.Context) error { return q.Execute(ctx, "cont", nil, nil) }

// Status is the answer of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // e.g. "running", "paused", "prelaunch", "shutdown"
}

// QueryStatus asks whether the guest runs.
func (q *Client) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Done is closed when the connection has ended and every event was delivered.
func (q *Client) Done() <-chan struct{} { return q.done }

// Close ends the connection and waits for the reader.
func (q *Client) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}
