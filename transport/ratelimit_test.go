package transport

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestSourceOf(t *testing.T) {
	for remote, want := range map[string]string{
		"192.0.2.7:5555":               "192.0.2.7/32",
		"[::ffff:192.0.2.7]:5555":      "192.0.2.7/32",
		"[2001:db8:1:2:3:4:5:6]:443":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443":   "2001:db8:1:2::/64",
		"[fe80::1%eth0]:443":           "fe80::/64",
		"pipe":                         "invalid Prefix",
		"[2001:db8::1]:notaport":       "invalid Prefix",
		"example.com:443":              "invalid Prefix",
		"[2001:db8:1:3:3:4:5:6]:65535": "2001:db8:1:3::/64",
	} {
		got, ok := sourceOf(remote)
		if got.String() != want || ok != got.IsValid() {
			t.Errorf("sourceOf(%q) = %v, %v; want %s", remote, got, ok, want)
		}
	}
}

// TestAuthLimiter checks the bucket arithmetic with a fake clock: the burst, the
// refill, forgetting a source that authenticated, and the overflow bucket shared by
// the sources that find the table full.
func TestAuthLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newAuthLimiter(3, 10*time.Second, 4, func() time.Time { return now })
	src := func(i int) netip.Prefix { return netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", i)) }

	for i := range 3 {
		if w := l.wait(src(1)); w != 0 {
			t.Fatalf("attempt %d must wait %v", i+1, w)
		}
		l.fail(src(1))
	}
	if w := l.wait(src(1)); w != 10*time.Second {
		t.Fatalf("after the burst: wait %v, want 10s", w)
	}
	now = now.Add(4 * time.Second)
	if w := l.wait(src(1)); w != 6*time.Second {
		t.Fatalf("4 s later: wait %v, want 6s", w)
	}
	now = now.Add(6 * time.Second)
	if w := l.wait(src(1)); w != 0 {
		t.Fatalf("after one interval: wait %v, want 0", w)
	}
	l.succeed(src(1))
	if l.len() != 0 {
		t.Fatal("a source that authenticated is still tracked")
	}

	// Fill the table, then every new source shares the overflow bucket.
	for i := range 4 {
		l.fail(src(10 + i))
	}
	for i := range 3 {
		if w := l.wait(src(100 + i)); w != 0 {
			t.Fatalf("overflow attempt %d must wait %v", i+1, w)
		}
		l.fail(src(100 + i))
	}
	if w := l.wait(src(200)); w == 0 {
		t.Fatal("a new source got past an empty overflow bucket")
	}
	if l.len() != 4 {
		t.Fatalf("table holds %d sources, bound 4", l.len())
	}
	// Once the tracked sources have refilled, a sweep makes room again.
	now = now.Add(time.Minute)
	l.fail(src(250))
	if _, ok := l.sources[src(250)]; !ok || l.len() != 1 {
		t.Fatalf("after the sweep: %d sources, new one tracked %v", l.len(), ok)
	}
}

// fakeConn is a net.Conn with a remote address and a Close that is counted.
type fakeConn struct {
	net.Conn
	remote net.Addr
	closed int
}

func (c *fakeConn) RemoteAddr() net.Addr { return c.remote }
func (c *fakeConn) Close() error         { c.closed++; return nil }

func TestConnLimiter(t *testing.T) {
	l := newConnLimiter(5, 2)
	conn := func(ip string) *fakeConn {
		return &fakeConn{remote: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 1234))}
	}
	a1, a2, a3 := conn("192.0.2.1"), conn("192.0.2.1"), conn("192.0.2.1")
	for _, c := range []*fakeConn{a1, a2, a3} {
		l.state(c, http.StateNew)
	}
	if a1.closed+a2.closed != 0 || a3.closed != 1 {
		t.Fatalf("per-source cap: closed %d %d %d, want only the third", a1.closed, a2.closed, a3.closed)
	}
	l.state(a3, http.StateClosed) // a refused connection was never counted
	l.state(a1, http.StateActive)
	l.state(a1, http.StateHijacked) // upgraded: no longer counts
	l.state(a1, http.StateClosed)
	others := []*fakeConn{conn("192.0.2.2"), conn("192.0.2.3"), conn("2001:db8::1"), conn("2001:db8::2"), conn("2001:db8::3")}
	for _, c := range others {
		l.state(c, http.StateNew)
	}
	if n, srcs, refused := l.counts(); n != 5 || srcs != 4 || refused != 2 {
		t.Fatalf("counts %d conns, %d sources, %d refused; want 5, 4, 2", n, srcs, refused)
	}
	if others[4].closed != 1 { // the third of the same IPv6 /64
		t.Fatal("per-source cap not applied to the /64")
	}
	extra := conn("192.0.2.9")
	l.state(extra, http.StateNew)
	if n, _, _ := l.counts(); extra.closed != 1 || n != 5 {
		t.Fatalf("total cap: closed %d, %d counted", extra.closed, n)
	}
	for _, c := range append(others, a2) {
		l.state(c, http.StateClosed)
	}
	if n, srcs, _ := l.counts(); n != 0 || srcs != 0 {
		t.Fatalf("after every close: %d conns, %d sources", n, srcs)
	}
}
