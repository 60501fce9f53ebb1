package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/internal/tuntest"
)

// BenchmarkIdleTCPFlows opens 2,000 TCP flows through the stack, exchanges one byte
// on each and leaves them idle, then reports heap+stacks per flow. The figure
// includes the application's own gVisor stack, so it is an upper bound of the
// stack's share. remote=tcp: the remotes are loopback TCP connections to an echo
// server (whose goroutines count too), relayed with a goroutine for the downstream
// direction; remote=drainer: in-memory remotes with readiness callbacks, like the
// transport's streams, relayed without goroutines.
//
//	go test -run '^$' -bench IdleTCPFlows -benchtime 1x ./netstack/
func BenchmarkIdleTCPFlows(b *testing.B) {
	echo := testnet.ServeTCP(b, func(c net.Conn) { defer c.Close(); io.Copy(c, c) }).String()
	b.Run("remote=tcp", func(b *testing.B) { benchIdleTCPFlows(b, &fakeHandler{tcpTarget: to(echo)}) })
	b.Run("remote=drainer", func(b *testing.B) { benchIdleTCPFlows(b, &drainHandler{}) })
}

func benchIdleTCPFlows(b *testing.B, h Handler) {
	const n = 2000
	for range b.N {
		dev, app := tuntest.Pair(b, appV4, appV6)
		st, err := New(dev, h, Options{Logger: zap.NewNop()})
		if err != nil {
			b.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapInuse + ms.StackInuse
		conns := make([]net.Conn, 0, n)
		for i := range n {
			c, err := app.DialTCPAddrPort(netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), uint16(1000+i)))
			if err != nil {
				b.Fatal(err)
			}
			c.Write([]byte("x"))
			if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
		}
		time.Sleep(500 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(ms.HeapInuse+ms.StackInuse-before)/n/1024, "KiB/flow")
		for _, c := range conns {
			c.Close()
		}
		st.Close()
	}
}

// BenchmarkClosedByDestination opens b.N connections whose destination answers and
// closes first, closes them from the application too, and reports the heap they
// still hold 3 s later (heap-B/flow): gVisor's endpoints in TIME_WAIT, if any.
//
//	go test -run '^$' -bench ClosedByDestination -benchtime 2000x ./netstack/
func BenchmarkClosedByDestination(b *testing.B) {
	srv := testnet.ServeTCP(b, func(c net.Conn) {
		c.Write([]byte("bye"))
		c.Close()
	})
	dev, app := tuntest.Pair(b, appV4)
	st, err := New(dev, &fakeHandler{tcpTarget: to(srv.String())}, Options{DialTimeout: 3 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b.ResetTimer()
	for i := range b.N {
		dst := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.7"), uint16(1000+i%60000))
		c, err := app.DialContextTCPAddrPort(ctx, dst)
		if err != nil {
			b.Fatal(err)
		}
		io.ReadAll(c)
		c.Close()
	}
	b.StopTimer()
	time.Sleep(3 * time.Second)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(before))/float64(b.N), "heap-B/flow")
	b.ReportMetric(float64(len(st.ip.RegisteredEndpoints())), "endpoints-left")
}
