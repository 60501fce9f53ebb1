package daemon

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	wgnetstack "golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/tetherd/tetherd/internal/tuntest"
	"github.com/tetherd/tetherd/transport"
)

// blackholeRelay forwards TCP connections to target. blackhole makes every
// connection relayed so far drop what it carries, silently, as a path that vanished
// does; connections made later work. hold makes them hold it instead, until release:
// a path that stalls and comes back.
type blackholeRelay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	dead   []*atomic.Bool
	held   map[*atomic.Bool]bool // the connections hold stalls
	gate   chan struct{}         // closed on release
	wg     sync.WaitGroup
	conns  []net.Conn
}

func newBlackholeRelay(t *testing.T, target string) *blackholeRelay {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &blackholeRelay{ln: ln, target: target}
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			dead := new(atomic.Bool)
			r.mu.Lock()
			r.dead = append(r.dead, dead)
			r.conns = append(r.conns, c, u)
			r.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					r.wait(dead)
					if n > 0 && !dead.Load() {
						if _, err := dst.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}
			r.wg.Go(func() { pipe(u, c) })
			r.wg.Go(func() { pipe(c, u) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.release()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// hold stalls every connection relayed so far until release.
func (r *blackholeRelay) hold() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.held = make(map[*atomic.Bool]bool)
	r.gate = make(chan struct{})
	for _, d := range r.dead {
		r.held[d] = true
	}
}

// release lets held connections go on with what they held.
func (r *blackholeRelay) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
	}
	r.held, r.gate = nil, nil
}

// wait blocks while the connection of dead is held.
func (r *blackholeRelay) wait(dead *atomic.Bool) {
	r.mu.Lock()
	held, gate := r.held[dead], r.gate
	r.mu.Unlock()
	if held {
		<-gate
	}
}

func (r *blackholeRelay) blackhole() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dead {
		d.Store(true)
	}
}

// relayedClient is a client whose peer is reached through a blackholeRelay, and that
// is told of network changes through netChanged.
type relayedClient struct {
	peer       *peerRig
	relay      *blackholeRelay
	netChanged chan struct{}
	c          *Client
	app        *wgnetstack.Net
}

func newRelayedClient(t *testing.T) *relayedClient {
	r := &relayedClient{peer: newPeerRig(t, ""), netChanged: make(chan struct{}, 1)}
	r.relay = newBlackholeRelay(t, strings.TrimSuffix(strings.TrimPrefix(r.peer.url, "ws://"), "/tether"))
	url := "ws://" + r.relay.ln.Addr().String() + "/tether"
	dev, app := tuntest.Pair(t, appV4)
	r.app = app
	r.c = runClient(t, ClientOptions{
		TUN: dev,
		Dial: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, url, nil)
		},
		NetworkChanged: r.netChanged,
		Logger:         zaptest.NewLogger(t),
	})
	return r
}

// TestNetworkChangeMovesToANewSession: after a network change, a session that does
// not answer at once is replaced by a new one as soon as that is up — well within
// the 3 s the ping alone would wait — and new flows work on it.
func TestNetworkChangeMovesToANewSession(t *testing.T) {
	r := newRelayedClient(t)
	relay, netChanged, c, app := r.relay, r.netChanged, r.c, r.app
	echo := func() error {
		conn, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			return err
		}
		_, err = io.ReadFull(conn, make([]byte, 4))
		return err
	}
	if err := echo(); err != nil {
		t.Fatal(err)
	}
	before := c.Status()

	relay.blackhole() // the old path is gone; a new connection works
	netChanged <- struct{}{}
	start := time.Now()
	for c.Status().Reconnects == before.Reconnects {
		// Waiting for the ping alone would take probeTimeout (3 s); the grace is
		// 250 ms here (loopback RTT), then one dial.
		if time.Since(start) > probeTimeout*2/3 {
			t.Fatalf("still on the old session %v after the network change", time.Since(start))
		}
		time.Sleep(10 * time.Millisecond)
	}
	moved := time.Since(start)
	if err := echo(); err != nil {
		t.Fatalf("new flow after moving to a new session: %v", err)
	}
	t.Logf("moved to a new session %v after the network change", moved.Round(time.Millisecond))
	if st := c.Status(); st.State != "connected" {
		t.Fatalf("state %q after the move", st.State)
	}

	// A network change with a healthy path keeps the session.
	now := c.Status()
	netChanged <- struct{}{}
	time.Sleep(1500 * time.Millisecond)
	if got := c.Status(); got.Reconnects != now.Reconnects {
		t.Fatalf("a healthy session was replaced: reconnects %d -> %d", now.Reconnects, got.Reconnects)
	}
}

// TestNetworkChangeEndsTheOldSession: a session left behind by a network change —
// its path stalled, so the client moved to a new one, and then came back — carries
// its open flows to their end and then closes; it does not live on beside the new
// one, kept alive by its keepalives.
func TestNetworkChangeEndsTheOldSession(t *testing.T) {
	r := newRelayedClient(t)
	p, relay, netChanged, c, app := r.peer, r.relay, r.netChanged, r.c, r.app
	flow, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	echo := func(conn net.Conn) error {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte("ping")); err != nil {
			return err
		}
		_, err = io.ReadFull(conn, make([]byte, 4))
		return err
	}
	if err := echo(flow); err != nil {
		t.Fatal(err)
	}
	before := c.Status()

	relay.hold() // the old path stalls
	netChanged <- struct{}{}
	start := time.Now()
	for c.Status().Reconnects == before.Reconnects {
		if time.Since(start) > 5*time.Second {
			t.Fatal("still on the old session 5 s after the network change")
		}
		time.Sleep(10 * time.Millisecond)
	}
	relay.release() // ... and comes back
	if n := p.srv.Sessions(); n != 2 {
		t.Fatalf("%d sessions at the peer after the move, want the old and the new", n)
	}
	if err := echo(flow); err != nil {
		t.Fatalf("the old session's flow broke when its path came back: %v", err)
	}
	flow.Close()
	start = time.Now()
	for p.srv.Sessions() != 1 {
		// Keepalives (every 5 s) would keep the old session up for good.
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d sessions at the peer 5 s after the old one's last flow closed, want 1", p.srv.Sessions())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("old session ended %v after its last flow", time.Since(start).Round(time.Millisecond))
	// New flows still work, on the new session.
	conn, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := echo(conn); err != nil {
		t.Fatal(err)
	}
}
