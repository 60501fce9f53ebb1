package transport

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"

	"github.com/tetherd/tetherd/transport/wire"
)

func TestUDPAssociation(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	pc := listenUDP(t, "echo:")
	a := openUDP(t, s, pc)
	defer a.Close()
	if _, err := a.WriteTo([]byte("ping"), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := a.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "echo:ping" || from.String() != pc.LocalAddr().String() {
		t.Fatalf("got %q from %v, %v", buf[:n], from, err)
	}
	// A denied destination is dropped and counted, and the association lives on.
	before := s.Stats().DgramsDropped
	a.WriteTo([]byte("x"), &net.UDPAddr{IP: net.IPv4(224, 0, 0, 9), Port: 520})
	deadline := time.Now().Add(5 * time.Second)
	for h.srvDropped() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.srvDropped() == 0 {
		t.Error("denied datagram not counted by the server")
	}
	_ = before
	a.WriteTo([]byte("again"), pc.LocalAddr())
	n, _, err = a.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "echo:again" {
		t.Fatalf("after a denied datagram: %q, %v", buf[:n], err)
	}
}

// srvDropped sums DgramsDropped over the server's sessions.
func (h *harness) srvDropped() uint64 {
	h.srv.mu.Lock()
	defer h.srv.mu.Unlock()
	var n uint64
	for s := range h.srv.sessions {
		n += s.dgramsDropped.Load()
	}
	return n
}

// TestUDPDropsUnderPressure: datagrams sent faster than the queue drains are dropped
// and counted, and WriteTo never blocks.
func TestUDPDropsUnderPressure(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(&DialOptions{Config: &Config{DgramQueue: 16 << 10}})
	pc := listenUDP(t, "")
	a := openUDP(t, s, pc)
	defer a.Close()
	payload := make([]byte, 1200)
	start := time.Now()
	for i := 0; i < 20000; i++ {
		if _, err := a.WriteTo(payload, pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("20000 WriteTo calls took %v: they must not block", d)
	}
	st := s.Stats()
	if st.DgramsDropped == 0 {
		t.Errorf("no datagram dropped (sent %d)", st.DgramsSent)
	}
	if st.DgramsSent+st.DgramsDropped != 20000 {
		t.Errorf("sent %d + dropped %d != 20000", st.DgramsSent, st.DgramsDropped)
	}
}

// TestICMPEcho: a real ping through the peer's unprivileged ICMP socket where the system
// allows one, else a clear UNSUPPORTED — never an invented reply.
func TestICMPEcho(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	dst := wire.Addr{IP: netip.MustParseAddr("127.0.0.1")}
	probe, perr := icmp.ListenPacket("udp4", "127.0.0.1")
	a, err := s.OpenICMP(ctxT(t), dst)
	if perr != nil {
		var se *StreamError
		if !errors.As(err, &se) || se.Code != wire.CodeUnsupported || !strings.Contains(se.Reason, "ping") {
			t.Fatalf("no ICMP socket here (%v), but OpenICMP: %v", perr, err)
		}
		t.Skipf("success path not testable here: %v (covered by the netns suite)", perr)
	}
	probe.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	body := []byte{0x12, 0x34, 0, 7, 'p', 'i', 'n', 'g'}
	if err := a.WriteToAddr(body, dst); err != nil {
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := a.ReadFromAddr(buf)
	if err != nil || from != dst || !bytes.Equal(buf[2:n], body[2:]) {
		t.Fatalf("echo reply %x from %v, %v", buf[:n], from, err)
	}
}

// TestGoAwayEndsAssociations: a graceful shutdown does not wait for idle datagram
// associations (they have no end of their own); they are reset at once.
func TestGoAwayEndsAssociations(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	pc := listenUDP(t, "")
	a := openUDP(t, s, pc)
	defer a.Close()
	start := time.Now()
	if err := h.srv.Shutdown(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Shutdown waited %v for an idle association", d)
	}
	select {
	case <-s.GoingAway():
	default:
		t.Error("GoingAway not closed")
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := a.ReadFrom(make([]byte, 10))
	var se *StreamError
	if !errors.As(err, &se) && !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("association after GOAWAY: %v", err)
	}
}

// TestUDPBatchedSends: the peer hands the client's datagrams to the kernel in batches
// (sendmmsg). Bursts to two destinations, with denied and IPv6 ones (this association's
// socket is IPv4) among them, arrive each at its own destination, whole and once; the
// others are dropped and counted without holding up the rest of their batch.
func TestUDPBatchedSends(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	sinks := []net.PacketConn{listenUDP(t, ""), listenUDP(t, "")}
	a := openUDP(t, s, sinks[0])
	defer a.Close()
	denied := &net.UDPAddr{IP: net.IPv4(224, 0, 0, 9), Port: 520}
	v6 := &net.UDPAddr{IP: net.IPv6loopback, Port: 9}
	const bursts, perBurst = 20, 14 // under the 16 datagrams an association queues
	got := [2]map[string]bool{{}, {}}
	buf := make([]byte, 2048)
	var dropped uint64
	for b := range bursts {
		want := 0
		for i := range perBurst {
			var to net.Addr
			switch {
			case i%7 == 3:
				to = denied
			case i%7 == 5:
				to = v6
			default:
				to = sinks[i%2].LocalAddr()
				want++
			}
			msg := fmt.Sprintf("%d/%d to sink %d %s", b, i, i%2, strings.Repeat("x", i*50))
			if _, err := a.WriteTo([]byte(msg), to); err != nil {
				t.Fatal(err)
			}
		}
		dropped += perBurst - uint64(want)
		deadline := time.Now().Add(10 * time.Second)
		for want > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("burst %d: %d datagrams did not arrive", b, want)
			}
			for k, pc := range sinks {
				pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					continue
				}
				m := string(buf[:n])
				if !strings.Contains(m, fmt.Sprintf(" to sink %d ", k)) || got[k][m] {
					t.Fatalf("sink %d got %q (duplicate: %v)", k, m, got[k][m])
				}
				var bb, i int
				fmt.Sscanf(m, "%d/%d", &bb, &i)
				if len(m) != len(fmt.Sprintf("%d/%d to sink %d ", bb, i, k))+i*50 {
					t.Fatalf("sink %d got %d bytes of %q", k, n, m[:min(40, n)])
				}
				got[k][m] = true
				want--
			}
			if h.srvDropped() > dropped {
				t.Fatalf("the server dropped %d datagrams, %d were to be dropped", h.srvDropped(), dropped)
			}
		}
	}
	waitFor(t, "the dropped datagrams counted", func() bool { return h.srvDropped() == dropped })
	if n := len(got[0]) + len(got[1]); n != bursts*perBurst*5/7 {
		t.Fatalf("%d datagrams arrived, want %d", n, bursts*perBurst*5/7)
	}
}
