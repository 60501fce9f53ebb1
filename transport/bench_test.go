package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/tetherd/tetherd/transport/wire"
)

// The benchmarks move data through a real loopback WebSocket (plaintext ws) and a real
// loopback TCP destination, and measure the same transfer over raw loopback TCP for
// comparison. Run them with:
//
//	go test -run '^$' -bench . -benchtime 2s ./transport/
//
// Results and profiles are in docs/performance.md. Besides MB/s, each reports
// cpu-ns/KiB: the CPU time (user + system, of the whole process: both ends of the
// session and the destination) per KiB moved, from getrusage.

const benchChunk = 64 << 10

// benchSink is a destination that discards what it reads and reports the byte count
// of each connection when it ends.
func benchSink(b *testing.B) (wire.Addr, <-chan int64) {
	counts := make(chan int64, 64)
	return listen(b, func(c net.Conn) {
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		counts <- n
	}), counts
}

// benchSource is a destination that writes n bytes on every connection, then closes.
func benchSource(b *testing.B, n int64) wire.Addr {
	return listen(b, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, benchChunk)
		for left := n; left > 0; {
			k := min(left, int64(len(buf)))
			if _, err := c.Write(buf[:k]); err != nil {
				return
			}
			left -= k
		}
	})
}

func benchHarness(b *testing.B) *Session {
	h := newHarness(b, func(s *Server) { s.Logger = zap.NewNop() })
	return h.dial(nil)
}

func runUpload(b *testing.B, streams int, open func(wire.Addr) (net.Conn, error)) {
	dst, counts := benchSink(b)
	per := (b.N + streams - 1) / streams
	b.SetBytes(benchChunk)
	b.ResetTimer()
	defer cpuPerKiB(b, int64(b.N)*benchChunk)()
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		c, err := open(dst)
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, benchChunk)
			for j := 0; j < per; j++ {
				if _, err := c.Write(buf); err != nil {
					b.Error(err)
					return
				}
			}
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}()
		defer c.Close()
	}
	wg.Wait()
	for i := 0; i < streams; i++ {
		if n := <-counts; n != int64(per)*benchChunk {
			b.Fatalf("sink got %d bytes, want %d", n, int64(per)*benchChunk)
		}
	}
}

func runDownload(b *testing.B, streams int, open func(wire.Addr) (net.Conn, error)) {
	per := int64((b.N+streams-1)/streams) * benchChunk
	dst := benchSource(b, per)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	defer cpuPerKiB(b, per*int64(streams))()
	var wg sync.WaitGroup
	for i := 0; i < streams; i++ {
		c, err := open(dst)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := io.Copy(io.Discard, c)
			if err != nil || n != per {
				b.Errorf("read %d of %d bytes: %v", n, per, err)
			}
		}()
	}
	wg.Wait()
}

func tunnelOpen(b *testing.B, s *Session) func(wire.Addr) (net.Conn, error) {
	return func(a wire.Addr) (net.Conn, error) { return s.OpenTCP(context.Background(), a) }
}

func rawOpen(a wire.Addr) (net.Conn, error) { return net.Dial("tcp", a.String()) }

func BenchmarkRawTCPUpload(b *testing.B)   { runUpload(b, 1, rawOpen) }
func BenchmarkRawTCPDownload(b *testing.B) { runDownload(b, 1, rawOpen) }

func BenchmarkStreamUpload(b *testing.B)   { runUpload(b, 1, tunnelOpen(b, benchHarness(b))) }
func BenchmarkStreamDownload(b *testing.B) { runDownload(b, 1, tunnelOpen(b, benchHarness(b))) }

func BenchmarkStreams16Upload(b *testing.B)   { runUpload(b, 16, tunnelOpen(b, benchHarness(b))) }
func BenchmarkStreams16Download(b *testing.B) { runDownload(b, 16, tunnelOpen(b, benchHarness(b))) }

func BenchmarkRawTCP16Download(b *testing.B) { runDownload(b, 16, rawOpen) }

// cpuPerKiB starts measuring the process's CPU time; the function it returns stops
// and reports it as cpu-ns/KiB of total bytes.
func cpuPerKiB(b *testing.B, total int64) func() {
	start := cpuTime()
	return func() {
		if used := cpuTime() - start; total > 0 {
			b.ReportMetric(float64(used.Nanoseconds())/(float64(total)/1024), "cpu-ns/KiB")
		}
	}
}

// cpuTime is the user + system time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runPingPong sends 64 bytes and waits for them to come back, b.N times, on one
// connection to an echo destination: ns/op is the round trip.
func runPingPong(b *testing.B, open func(wire.Addr) (net.Conn, error)) {
	dst := listen(b, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	c, err := open(dst)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	testnet.PingPong(b, c)
}

func BenchmarkRawTCPPingPong(b *testing.B) { runPingPong(b, rawOpen) }
func BenchmarkStreamPingPong(b *testing.B) { runPingPong(b, tunnelOpen(b, benchHarness(b))) }
