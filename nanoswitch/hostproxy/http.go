package hostproxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Realm is the protection space named in the 407 challenge.
const Realm = "qcluster"

// HTTPServer serves HTTP CONNECT on the listeners given to Serve.
//
// Refusals are HTTP answers, after which the connection closes: 407 with a
// Proxy-Authenticate challenge for missing or wrong credentials, 405 for
// any method but CONNECT, 400 for a malformed request or target, 403 for a
// destination the Dial function refuses with ErrNotAllowed, 502 when the
// destination does not answer (refused, unreachable, timed out).
//
// Limits: CONNECT only (no forwarding of absolute-form requests), one
// tunnel per connection, HTTP/1.x only.
type HTTPServer struct {
	Config

	group Group
}

// Serve accepts clients on ln until ln or the server is closed, and
// returns nil then. Each client is served on a goroutine of its own.
func (s *HTTPServer) Serve(ln net.Listener) error {
	return s.group.Serve(ln, "http proxy", s.serveConn)
}

// Close closes the listeners, the tunnels and dials in progress, and waits
// for the goroutines serving them.
func (s *HTTPServer) Close() error {
	s.group.Close()
	return nil
}

// refusal is an answer other than 200.
type refusal struct {
	code   int
	reason string // one line, for the body and the log
}

func (r *refusal) Error() string { return fmt.Sprintf("%d %s", r.code, r.reason) }

// maxHeaderBytes bounds a request's head: a CONNECT needs a few hundred.
const maxHeaderBytes = 16 << 10

// readConnect reads one request from br (which the caller bounds) and returns its target
// ("host:port") once it is a well-formed CONNECT carrying creds; otherwise a
// *refusal (or the read error).
func readConnect(br *bufio.Reader, creds Credentials) (string, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return "", &refusal{http.StatusBadRequest, "malformed request: " + err.Error()}
	}
	// Credentials first: a client without them learns nothing else.
	user, pass, ok := basicAuth(req.Header.Get("Proxy-Authorization"))
	if !ok || !creds.Match(user, pass) {
		reason := "proxy credentials required (Proxy-Authorization: Basic)"
		if ok {
			reason = "wrong proxy credentials"
		}
		return "", &refusal{http.StatusProxyAuthRequired, reason}
	}
	if req.Method != http.MethodConnect {
		return "", &refusal{http.StatusMethodNotAllowed, fmt.Sprintf("method %s: this proxy only tunnels (CONNECT)", req.Method)}
	}
	// The authority form (RFC 9112 section 3.2.3): host:port, port required.
	target := req.RequestURI
	host, port, err := net.SplitHostPort(target)
	if p, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || p == 0 {
		return "", &refusal{http.StatusBadRequest, fmt.Sprintf("target %q: want host:port", target)}
	}
	return target, nil
}

// basicAuth decodes a "Basic" credentials header value (RFC 7617).
func basicAuth(v string) (user, pass string, ok bool) {
	scheme, token, found := strings.Cut(strings.TrimSpace(v), " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return "", "", false
	}
	return strings.Cut(string(raw), ":")
}

// StatusCode is the answer to a Dial error: 403 for ErrNotAllowed,
// 502 otherwise.
func StatusCode(err error) int {
	if errors.Is(err, ErrNotAllowed) {
		return http.StatusForbidden
	}
	return http.StatusBadGateway
}

// writeRefusal writes a complete response to a refused request.
func writeRefusal(w io.Writer, r *refusal) error {
	body := r.reason + "\n"
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", r.code, http.StatusText(r.code))
	if r.code == http.StatusProxyAuthRequired {
		fmt.Fprintf(&b, "Proxy-Authenticate: Basic realm=%q\r\n", Realm)
	}
	if r.code == http.StatusMethodNotAllowed {
		b.WriteString("Allow: CONNECT\r\n")
	}
	fmt.Fprintf(&b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	_, err := io.WriteString(w, b.String())
	return err
}

// serveConn runs one client's session.
func (s *HTTPServer) serveConn(c net.Conn) {
	log, timeout := s.begin(c)
	// The head is bounded; what follows it is the tunnel's.
	head := &io.LimitedReader{R: c, N: maxHeaderBytes}
	br := bufio.NewReader(head)
	target, err := readConnect(br, s.credentials())
	var r *refusal
	if errors.As(err, &r) {
		_ = writeRefusal(c, r)
		log.Info("http proxy: refused", "status", r.code, "reason", r.reason)
		return
	}
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	up, err := s.group.Dial(ctx, s.Dial, "tcp", target)
	cancel()
	_ = c.SetWriteDeadline(time.Now().Add(timeout)) // for the answer, however long Dial took
	if err != nil {
		r := &refusal{StatusCode(err), fmt.Sprintf("connect %s: %v", target, err)}
		_ = writeRefusal(c, r)
		log.Info("http proxy: connect refused", "target", target, "status", r.code, "err", err)
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	head.N = math.MaxInt64
	log.Debug("http proxy: connected", "target", target)
	// A client may send its first bytes right behind the request; they are
	// in br already.
	s.group.Splice(readerConn{Reader: br, Conn: c}, up)
}
