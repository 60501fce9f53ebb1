package netstack

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/tetherd/tetherd/internal/tuntest"
)

// stallHandler dials every destination to target, except dead's, which wait until
// the dial's context ends or release is closed.
type stallHandler struct {
	fakeHandler
	dead      netip.Addr
	release   chan struct{}
	deadDials atomic.Int32
}

func (h *stallHandler) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	if dst.Addr() == h.dead {
		h.deadDials.Add(1)
		select {
		case <-h.release:
			return nil, errors.New("host unreachable")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.fakeHandler.DialTCP(ctx, src, dst)
}

// TestInFlightPerHost: connects to a host whose dials hang may take the dial slots
// while there is room, but once half of MaxInFlight are taken, that host's further
// SYNs are dropped (counted in TCPDeferred) while another host's connect still
// completes; when its dials end, the host gets its slots back.
func TestInFlightPerHost(t *testing.T) {
	echo := listenTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	h := &stallHandler{fakeHandler: fakeHandler{tcpTarget: to(echo)}, dead: netip.MustParseAddr("198.51.100.9"), release: make(chan struct{})}
	dev, app := tuntest.Pair(t, appV4)
	st, err := New(dev, h, Options{MaxInFlight: 8, MaxInFlightPerHost: 2, DialTimeout: time.Minute, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		st.Close()
		wg.Wait()
	})
	released := false
	release := func() {
		if !released {
			close(h.release)
			released = true
		}
	}
	defer release()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connectDead := func(port uint16) {
		wg.Go(func() {
			c, err := app.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(h.dead, port))
			if err == nil {
				c.Close()
			}
		})
	}
	// Four connects to the dead host, past its 2: half of the 8 slots were free for
	// each.
	for port := uint16(80); port < 84; port++ {
		connectDead(port)
	}
	waitUntil(t, "four dials to the dead host", func() bool { return h.deadDials.Load() == 4 })
	// A fifth: half the slots are taken and the host holds more than its share.
	connectDead(443)
	waitUntil(t, "the fifth SYN dropped", func() bool { return st.Stats().TCPDeferred > 0 })
	if n := h.deadDials.Load(); n != 4 {
		t.Fatalf("%d dials to the dead host, want 4: the fifth was let through", n)
	}
	// Another host still connects, and carries bytes.
	c, err := app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatalf("connect to another host while the dead one holds half the slots: %v", err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, 4)); err != nil {
		t.Fatalf("echo through the other host: %v", err)
	}
	c.Close()
	// The dead host's dials end: its retransmitted SYN (the application's kernel
	// retries after about a second) is dialed now.
	release()
	waitUntil(t, "the fifth connect dialed after the others ended", func() bool { return h.deadDials.Load() == 5 })
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
