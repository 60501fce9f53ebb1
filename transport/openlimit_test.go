package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

// TestPendingOpensPerHost: opens to a host that does not answer may take the
// session's slots while there is room (a burst to one host is not held back), but
// once half of them are taken, a host that holds MaxPendingOpensPerHost gets no
// more — any port — while other hosts still get through; a slot comes back when
// its dial ends.
func TestPendingOpensPerHost(t *testing.T) {
	dead := netip.MustParseAddr("198.51.100.9")
	alive := netip.MustParseAddr("198.51.100.7")
	echoAddr := testnetEcho(t)
	release := make(chan struct{})
	var deadDials atomic.Int32
	h := newHarness(t, func(s *Server) {
		s.Config = &Config{MaxPendingOpens: 8, MaxPendingOpensPerHost: 2}
		s.DialTimeout = time.Minute // the dead host's dials end when the test says
		s.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap := netip.MustParseAddrPort(addr)
			if ap.Addr() == dead {
				deadDials.Add(1)
				select {
				case <-release:
					return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.EHOSTUNREACH}
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", echoAddr)
		}
	})
	s := h.dial(nil)

	// Four opens to the dead host, on four ports: past its 2, but half of the 8
	// slots were free for each.
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	openDead := func(port uint16) {
		wg.Go(func() {
			_, err := s.OpenTCP(ctxT(t), wire.Addr{IP: dead, Port: port})
			errs <- err
		})
	}
	for port := uint16(80); port < 84; port++ {
		openDead(port)
	}
	defer wg.Wait()
	defer close(release)
	waitFor(t, "four dials to the dead host", func() bool { return deadDials.Load() == 4 })

	// Half the slots are taken now: a fifth, on yet another port, is refused.
	_, err := s.OpenTCP(ctxT(t), wire.Addr{IP: dead, Port: 443})
	var se *StreamError
	if !errors.As(err, &se) || se.Code != wire.CodeLimit || !strings.Contains(se.Reason, "to 198.51.100.9") {
		t.Fatalf("fifth open to the dead host: %v, want LIMIT for that host", err)
	}
	// Another host still gets through.
	st, err := s.OpenTCP(ctxT(t), wire.Addr{IP: alive, Port: 7})
	if err != nil {
		t.Fatalf("open to another host while the dead one holds half the slots: %v", err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 4)); err != nil {
		t.Fatalf("echo through the other host: %v", err)
	}
	st.Close()

	// One of the dead host's dials fails: below half again, it may dial once more.
	release <- struct{}{}
	if err := <-errs; !errors.As(err, &se) || se.Code != wire.CodeHostUnreach {
		t.Fatalf("the released dial: %v, want HOST_UNREACHABLE", err)
	}
	openDead(444)
	waitFor(t, "a new dial to the dead host once a slot came back", func() bool { return deadDials.Load() == 5 })
}

// testnetEcho is a loopback echo server's address.
func testnetEcho(t *testing.T) string {
	return listen(t, echo).AddrPort().String()
}

func TestPendingOpensConfig(t *testing.T) {
	for _, tc := range []struct {
		in      Config
		perHost int
		err     string
	}{
		{Config{}, 64, ""},
		{Config{MaxPendingOpens: 10}, 10, ""},
		{Config{MaxPendingOpensPerHost: 5}, 5, ""},
		{Config{MaxPendingOpens: 10, MaxPendingOpensPerHost: 11}, 0, "larger than MaxPendingOpens"},
		{Config{MaxPendingOpensPerHost: -1}, 0, "must be positive"},
	} {
		got, err := tc.in.withDefaults()
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: %v, want an error saying %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("%+v: %v", tc.in, err)
		case got.MaxPendingOpensPerHost != tc.perHost:
			t.Errorf("%+v: %d a host, want %d", tc.in, got.MaxPendingOpensPerHost, tc.perHost)
		}
	}
}
