package hostproxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzReadConnect: the request reader takes any bytes without panicking,
// and what it accepts is a CONNECT to host:port with the right credentials.
func FuzzReadConnect(f *testing.F) {
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:secret")) + "\r\n"
	f.Add([]byte("CONNECT node0:7443 HTTP/1.1\r\nHost: node0:7443\r\n" + auth + "\r\n"))
	f.Add([]byte("CONNECT 10.42.0.10:22 HTTP/1.0\r\n" + auth + "\r\nSSH-2.0-x\r\n"))
	f.Add([]byte("GET http://node0/ HTTP/1.1\r\nHost: node0\r\n\r\n"))
	f.Add([]byte("CONNECT [::1]:80 HTTP/1.1\r\nProxy-Authorization: basic Og==\r\n\r\n"))
	creds := Credentials{Username: "user", Password: "secret"}
	f.Fuzz(func(t *testing.T, data []byte) {
		target, err := readConnect(bufio.NewReader(bytes.NewReader(data)), creds)
		if err != nil {
			var r *refusal
			if errors.As(err, &r) && r.code != 400 && r.code != 405 && r.code != 407 {
				t.Fatalf("refusal %d %q", r.code, r.reason)
			}
			return
		}
		if !bytes.HasPrefix(data, []byte("CONNECT ")) {
			t.Fatalf("accepted a request that is not a CONNECT: %q", data)
		}
		if _, _, err := net.SplitHostPort(target); err != nil {
			t.Fatalf("accepted target %q: %v", target, err)
		}
	})
}

// startHTTP serves an HTTPServer with testConfig and returns its address.
func startHTTP(t *testing.T, backend netip.AddrPort) string {
	t.Helper()
	return serve(t, &HTTPServer{Config: testConfig(backend)}).String()
}

// TestNetHTTPClient: net/http's own client tunnels HTTPS through the proxy
// with the credentials of the proxy URL, and gets a 407 without them.
func TestNetHTTPClient(t *testing.T) {
	backend := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello through the tunnel")
	}))
	defer backend.Close()
	addr := startHTTP(t, backend.Listener.Addr().(*net.TCPAddr).AddrPort())
	_, port, _ := net.SplitHostPort(backend.Listener.Addr().String())

	get := func(proxy string) (*http.Response, error) {
		tr := backend.Client().Transport.(*http.Transport).Clone()
		u, _ := url.Parse(proxy)
		tr.Proxy = http.ProxyURL(u)
		tr.TLSClientConfig.ServerName = "example.com" // httptest's certificate
		defer tr.CloseIdleConnections()
		return (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://backend:" + port + "/")
	}
	resp, err := get("http://user:secret@" + addr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello through the tunnel" {
		t.Errorf("body %q", body)
	}
	// net/http returns the proxy's refusal as an error naming its status.
	for _, proxy := range []string{"http://" + addr, "http://user:guess@" + addr} {
		const want = "Proxy Authentication Required"
		if _, err := get(proxy); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("through %s: %v, want an error with %q", proxy, err, want)
		}
	}
}

// raw sends req on a new connection and reads the response and whatever
// follows it until the proxy closes.
func raw(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%q: %v", req, err)
	}
	if resp.StatusCode == http.StatusOK {
		// The tunnel follows the answer: send our end of stream and read
		// what the destination sends back until its end.
		c.(*net.TCPConn).CloseWrite()
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestRawRequests(t *testing.T) {
	echo := echoServer(t)
	addr := startHTTP(t, echo)
	port := fmt.Sprint(echo.Port())
	auth := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:secret")) + "\r\n"
	wrong := "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("user:guess")) + "\r\n"
	for _, c := range []struct {
		name, req string
		code      int
		body      string // a part of it
	}{
		{"no credentials", "CONNECT backend:" + port + " HTTP/1.1\r\nHost: x\r\n\r\n", 407, "credentials required"},
		{"wrong credentials", "CONNECT backend:" + port + " HTTP/1.1\r\n" + wrong + "\r\n", 407, "wrong"},
		{"other scheme", "CONNECT backend:" + port + " HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n", 407, "required"},
		{"outside the cluster", "CONNECT 192.0.2.1:22 HTTP/1.1\r\n" + auth + "\r\n", 403, "not allowed"},
		{"refused", "CONNECT refused:22 HTTP/1.1\r\n" + auth + "\r\n", 502, "refused"},
		{"silent", "CONNECT slow:22 HTTP/1.1\r\n" + auth + "\r\n", 502, "deadline"},
		{"not connect", "GET http://backend:" + port + "/ HTTP/1.1\r\nHost: backend\r\n" + auth + "\r\n", 405, "CONNECT"},
		{"no port", "CONNECT backend HTTP/1.1\r\n" + auth + "\r\n", 400, "host:port"},
		{"garbage", "HELLO\r\n\r\n", 400, "malformed"},
		// Data right behind the request reaches the destination.
		{"early data", "CONNECT backend:" + port + " HTTP/1.1\r\n" + auth + "\r\nping\n", 200, "ping\n"},
	} {
		resp, body := raw(t, addr, c.req)
		if resp.StatusCode != c.code || !strings.Contains(body, c.body) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, resp.StatusCode, body, c.code, c.body)
		}
		if c.code == 407 && resp.Header.Get("Proxy-Authenticate") != `Basic realm="qcluster"` {
			t.Errorf("%s: Proxy-Authenticate %q", c.name, resp.Header.Get("Proxy-Authenticate"))
		}
	}
}

// TestCloseEndsTunnels: Close ends an open tunnel and its goroutines.
func TestCloseEndsTunnels(t *testing.T) {
	echo := echoServer(t)
	s := &HTTPServer{Config: testConfig(echo)}
	c, err := net.Dial("tcp", serve(t, s).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "CONNECT backend:%d HTTP/1.1\r\nProxy-Authorization: Basic %s\r\n\r\n", echo.Port(), base64.StdEncoding.EncodeToString([]byte("user:secret")))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%v %v", resp, err)
	}
	s.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Error("tunnel still open after Close")
	}
}
