package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/internal/tuntest"
)

// The relay benchmarks move bytes end to end in one process: an application stack
// (wireguard-go's tun/netstack, itself gVisor) → queue TUN pair (MTU 1420) → the Stack
// under test → its TCP relay → a real loopback TCP destination, and back. cpu-ns/KiB is
// the CPU time per KiB of payload, and includes the application's stack, which costs
// about as much as ours: read it as an upper bound of the relay's own cost.
//
//	go test -run '^$' -bench Relay -benchmem ./netstack/

const relayChunk = 64 << 10

func relayRig(b *testing.B, handle func(net.Conn)) (*Stack, func() (net.Conn, error)) {
	dst := testnet.ServeTCP(b, handle).String()
	dev, app := tuntest.Pair(b, appV4)
	st, err := New(dev, &fakeHandler{tcpTarget: to(dst)}, Options{Logger: zap.NewNop()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	dial := func() (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return app.DialContextTCPAddrPort(ctx, netip.MustParseAddrPort("198.51.100.10:5201"))
	}
	return st, dial
}

func BenchmarkRelayUpload(b *testing.B) {
	got := make(chan int64, 1)
	_, dial := relayRig(b, func(c net.Conn) {
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, relayChunk)
	b.SetBytes(relayChunk)
	b.ResetTimer()
	stop := cpuPerKiB(b)
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	n := <-got
	b.StopTimer()
	stop(n)
	if n != int64(b.N)*relayChunk {
		b.Fatalf("destination got %d bytes, want %d", n, int64(b.N)*relayChunk)
	}
}

func BenchmarkRelayDownload(b *testing.B) {
	want := make(chan int64, 1)
	_, dial := relayRig(b, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, relayChunk)
		for left := <-want; left > 0; left -= relayChunk {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(relayChunk)
	b.ResetTimer()
	stop := cpuPerKiB(b)
	want <- int64(b.N) * relayChunk
	n, err := io.Copy(io.Discard, c)
	b.StopTimer()
	stop(n)
	if err != nil || n != int64(b.N)*relayChunk {
		b.Fatalf("application got %d bytes (%v), want %d", n, err, int64(b.N)*relayChunk)
	}
}

// BenchmarkRelayPingPong sends 64 bytes through the relay to an echo destination and
// waits for them to come back, b.N times on one connection: ns/op is the round trip
// through both stacks.
func BenchmarkRelayPingPong(b *testing.B) {
	_, dial := relayRig(b, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	c, err := dial()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	testnet.PingPong(b, c)
}
