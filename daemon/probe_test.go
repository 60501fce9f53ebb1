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

	"github.com/tetherd/tetherd/internal/tuntest"
	"github.com/tetherd/tetherd/transport"
)

// blackholeRelay forwards TCP connections to target. blackhole makes every
// connection relayed so far drop what it carries, silently, as a path that vanished
// does; connections made later work.
type blackholeRelay struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	dead   []*atomic.Bool
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
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *blackholeRelay) blackhole() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.dead {
		d.Store(true)
	}
}

// TestNetworkChangeMovesToANewSession: after a network change, a session that does
// not answer at once is replaced by a new one as soon as that is up — well within
// the 3 s the ping alone would wait — and new flows work on it.
func TestNetworkChangeMovesToANewSession(t *testing.T) {
	p := newPeerRig(t, "")
	relay := newBlackholeRelay(t, strings.TrimSuffix(strings.TrimPrefix(p.url, "ws://"), "/tether"))
	url := "ws://" + relay.ln.Addr().String() + "/tether"
	netChanged := make(chan struct{}, 1)
	dev, app := tuntest.Pair(t, appV4)
	c := runClient(t, ClientOptions{
		TUN: dev,
		Dial: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, url, nil)
		},
		NetworkChanged: netChanged,
		Logger:         zaptest.NewLogger(t),
	})
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
