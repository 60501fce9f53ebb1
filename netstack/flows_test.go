package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/internal/testnet"
)

// idHandler records the flow ids the stack passes to its dials.
type idHandler struct {
	Handler
	mu  sync.Mutex
	ids []uint64
}

func (h *idHandler) record(ctx context.Context) {
	id, ok := flowtab.IDFrom(ctx)
	if !ok {
		id = 0
	}
	h.mu.Lock()
	h.ids = append(h.ids, id)
	h.mu.Unlock()
}

func (h *idHandler) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	h.record(ctx)
	return h.Handler.DialTCP(ctx, src, dst)
}

func (h *idHandler) DialUDP(ctx context.Context, src, dst netip.AddrPort) (PacketConn, error) {
	h.record(ctx)
	return h.Handler.DialUDP(ctx, src, dst)
}

// waitFlows polls the stack until cond holds for its flows.
func waitFlows(t *testing.T, st *Stack, what string, cond func([]Flow) bool) []Flow {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		fl := st.Flows()
		if cond(fl) {
			return fl
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: flows are %+v", what, fl)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFlowsListTCPAndUDP(t *testing.T) {
	echo := listenTCP(t, func(c net.Conn) { defer c.Close(); io.Copy(c, c) })
	uecho := testnet.ServeUDPEcho(t)
	h := &idHandler{Handler: &fakeHandler{
		tcpTarget: func(dst netip.AddrPort) (string, error) {
			if dst.Port() == 9 {
				return "", syscall.ECONNREFUSED
			}
			return echo, nil
		},
		udpTarget: uecho.String(),
	}}
	r := newRig(t, h)

	// A refused dial gets an id but is never listed.
	if _, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.7:9")); err == nil {
		t.Fatal("refused dial succeeded")
	}
	if fl := r.st.Flows(); len(fl) != 0 {
		t.Fatalf("refused flow listed: %+v", fl)
	}

	dst := netip.MustParseAddrPort("198.51.100.7:443")
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := make([]byte, 3000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, msg); err != nil {
		t.Fatal(err)
	}
	fl := waitFlows(t, r.st, "tcp bytes counted", func(fl []Flow) bool {
		return len(fl) == 1 && fl[0].BytesOut == 3000 && fl[0].BytesIn == 3000
	})
	tcpFlow := fl[0]
	if tcpFlow.Proto != "tcp" || tcpFlow.Dst != dst.String() || netip.MustParseAddrPort(tcpFlow.Src).Addr() != appV4 {
		t.Fatalf("tcp flow = %+v", tcpFlow)
	}
	if time.Since(tcpFlow.Started) > time.Minute || tcpFlow.Started.After(time.Now()) {
		t.Fatalf("started = %v", tcpFlow.Started)
	}

	u, err := r.app.ListenUDPAddrPort(netip.AddrPortFrom(appV4, 40001))
	if err != nil {
		t.Fatal(err)
	}
	udst := netip.MustParseAddrPort("198.51.100.1:5000")
	if _, err := u.WriteTo([]byte("hello"), net.UDPAddrFromAddrPort(udst)); err != nil {
		t.Fatal(err)
	}
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, _, err := u.ReadFrom(buf); err != nil || n != 5 {
		t.Fatal(n, err)
	}
	fl = waitFlows(t, r.st, "udp listed", func(fl []Flow) bool {
		return len(fl) == 2 && fl[1].BytesOut == 5 && fl[1].BytesIn == 5
	})
	if fl[1].Proto != "udp" || fl[1].Dst != udst.String() || fl[1].Src != netip.AddrPortFrom(appV4, 40001).String() {
		t.Fatalf("udp flow = %+v", fl[1])
	}
	if fl[0].ID >= fl[1].ID {
		t.Fatalf("not ordered by id: %+v", fl)
	}

	// The ids handed to the dials are the listed ids; the refused one came first.
	h.mu.Lock()
	ids := append([]uint64(nil), h.ids...)
	h.mu.Unlock()
	if len(ids) != 3 || ids[0] == 0 || ids[1] != fl[0].ID || ids[2] != fl[1].ID || ids[0] >= ids[1] {
		t.Fatalf("dial ids %v, listed %d and %d", ids, fl[0].ID, fl[1].ID)
	}

	// Closing the TCP connection removes its flow; the UDP one stays until idle.
	c.Close()
	waitFlows(t, r.st, "tcp flow gone", func(fl []Flow) bool { return len(fl) == 1 && fl[0].Proto == "udp" })
	u.Close()
}
