package transport

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

// queueDatagrams sends count datagrams to dst from the senders in turn, the i-th
// being dgram(i), and waits until dst's socket holds them all.
func queueDatagrams(t *testing.T, dst *net.UDPConn, senders []net.PacketConn, count int, dgram func(int) []byte) {
	t.Helper()
	for i := range count {
		if _, err := senders[i%len(senders)].WriteTo(dgram(i), dst.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// Loopback delivers on the sending call; a short pause covers any deferral.
	time.Sleep(20 * time.Millisecond)
}

// batchDatagram is the i-th datagram of the batch tests: its number, then filler;
// one in ten is 60,000 bytes long, as large as a batch buffer must take.
func batchDatagram(i int) []byte {
	size := 20 + i*37
	if i%10 == 7 {
		size = 60000
	}
	b := bytes.Repeat([]byte{byte('a' + i%26)}, size)
	copy(b, fmt.Sprintf("%04d", i))
	return b
}

func TestBatchReader(t *testing.T) {
	for _, fam := range []struct {
		network, addr string
		v4            bool
	}{
		{"udp4", "127.0.0.1:0", true},
		{"udp6", "[::1]:0", false},
	} {
		t.Run(fam.network, func(t *testing.T) {
			uc, err := net.ListenUDP(fam.network, mustUDPAddr(t, fam.network, fam.addr))
			if err != nil {
				t.Skipf("no %s loopback: %v", fam.network, err)
			}
			defer uc.Close()
			uc.SetReadBuffer(4 << 20)
			var senders []net.PacketConn
			for range 2 {
				pc, err := net.ListenPacket(fam.network, fam.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				senders = append(senders, pc)
			}
			const count = 40
			queueDatagrams(t, uc, senders, count, batchDatagram)

			r, err := newBatchReader(uc, fam.v4)
			if errors.Is(err, errors.ErrUnsupported) {
				t.Skip("no batch reads on this OS")
			}
			if err != nil {
				t.Fatal(err)
			}
			next := 0
			for next < count {
				uc.SetReadDeadline(time.Now().Add(5 * time.Second))
				err := r.read(func(p []byte, from *net.UDPAddr) error {
					if want := batchDatagram(next); !bytes.Equal(p, want) {
						t.Fatalf("datagram %d: got %d bytes starting %q, want %d starting %q", next, len(p), p[:min(8, len(p))], len(want), want[:8])
					}
					if want := senders[next%2].LocalAddr().(*net.UDPAddr); from.Port != want.Port || !from.IP.Equal(want.IP) {
						t.Fatalf("datagram %d from %v, want %v", next, from, want)
					}
					next++
					return nil
				})
				if err != nil {
					t.Fatalf("after %d datagrams: %v", next, err)
				}
			}
			// 2, 4, 8, 16, then the last 10: five calls where one at a time takes 40.
			if r.calls > 5 {
				t.Errorf("%d datagrams took %d reads", count, r.calls)
			}
			// A batch that came back short shrinks the next one.
			if r.size != 16 {
				t.Errorf("batch size %d after a short batch of 10, want 16", r.size)
			}

			// An error from the callback ends the batch and is returned.
			queueDatagrams(t, uc, senders, 3, batchDatagram)
			stop := errors.New("stop")
			seen := 0
			if err := r.read(func([]byte, *net.UDPAddr) error { seen++; return stop }); err != stop || seen != 1 {
				t.Fatalf("read with a failing callback: %v after %d datagrams", err, seen)
			}

			// The rest of that batch went with it (the association is closing when
			// forwarding fails); the socket is idle now, and its deadline passes.
			uc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			if err := r.read(func([]byte, *net.UDPAddr) error { return nil }); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("read of an idle socket: %v, want a deadline error", err)
			}
			// One datagram in a batch of 6 (twice the 3 of the last): back to 2.
			queueDatagrams(t, uc, senders, 1, batchDatagram)
			uc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if err := r.read(func(p []byte, _ *net.UDPAddr) error { seen++; return nil }); err != nil || seen != 2 {
				t.Fatalf("read of one datagram: %v, %d seen", err, seen)
			}
			if r.size != 2 {
				t.Errorf("batch size %d after a batch of one, want 2", r.size)
			}

			// Closing the socket ends a waiting read.
			uc.SetReadDeadline(time.Time{})
			done := make(chan error, 1)
			go func() { done <- r.read(func([]byte, *net.UDPAddr) error { return nil }) }()
			time.Sleep(20 * time.Millisecond)
			uc.Close()
			select {
			case err := <-done:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("read of a closed socket: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("read did not return when the socket closed")
			}
		})
	}
}

func mustUDPAddr(t *testing.T, network, addr string) *net.UDPAddr {
	t.Helper()
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return ua
}

// TestUDPBatchedReceives: a burst from two remotes to an association's socket on the
// peer reaches the client whole, in order, each datagram with its own source.
func TestUDPBatchedReceives(t *testing.T) {
	h := newHarness(t, nil)
	s := h.dial(nil)
	remotes := []net.PacketConn{listenUDP(t, ""), listenUDP(t, "")}
	a := openUDP(t, s, remotes[0])
	defer a.Close()
	// The peer's socket address, as the remotes see it.
	var peer net.Addr
	buf := make([]byte, 64<<10)
	for _, pc := range remotes {
		if _, err := a.WriteTo([]byte("hello"), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		peer = from
	}
	const bursts, perBurst = 10, 12 // under the 16 datagrams an association queues
	for b := range bursts {
		for i := range perBurst {
			d := batchDatagram(b*perBurst + i)
			if len(d) > 2000 {
				d = d[:2000] // a client-side queue of 16 bounds the bytes too
			}
			if _, err := remotes[i%2].WriteTo(d, peer); err != nil {
				t.Fatal(err)
			}
		}
		for i := range perBurst {
			a.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := a.ReadFrom(buf)
			if err != nil {
				t.Fatalf("burst %d, datagram %d: %v", b, i, err)
			}
			want := batchDatagram(b*perBurst + i)
			if len(want) > 2000 {
				want = want[:2000]
			}
			if !bytes.Equal(buf[:n], want) {
				t.Fatalf("burst %d, datagram %d: got %d bytes starting %q, want %d starting %q", b, i, n, buf[:min(8, n)], len(want), want[:8])
			}
			if from.String() != remotes[i%2].LocalAddr().String() {
				t.Fatalf("burst %d, datagram %d from %v, want %v", b, i, from, remotes[i%2].LocalAddr())
			}
		}
	}
}

// TestIdleAssociationsHoldNoBuffer: a UDP association that has carried a datagram
// each way and gone quiet holds no 64 KiB buffer on the peer, in either direction,
// for IPv4 (batched sends) and IPv6 sockets (one datagram at a time). Each used to
// hold one for its whole life: 1,000 idle associations were 60 MiB of heap.
func TestIdleAssociationsHoldNoBuffer(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "udp6" {
				addr = "[::1]:0"
			}
			echo, err := net.ListenPacket(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				buf := make([]byte, 2048)
				for {
					n, from, err := echo.ReadFrom(buf)
					if err != nil {
						return
					}
					echo.WriteTo(buf[:n], from)
				}
			}()
			defer func() { echo.Close(); <-done }()

			h := newHarness(t, nil)
			s := h.dial(nil)
			const n = 300
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			as := make([]*Association, 0, n)
			defer func() {
				for _, a := range as {
					a.Close()
				}
			}()
			buf := make([]byte, 100)
			for range n {
				a := openUDP(t, s, echo)
				as = append(as, a)
				if _, err := a.WriteTo([]byte("ping"), echo.LocalAddr()); err != nil {
					t.Fatal(err)
				}
				a.SetReadDeadline(time.Now().Add(5 * time.Second))
				if k, _, err := a.ReadFrom(buf); err != nil || string(buf[:k]) != "ping" {
					t.Fatalf("echo: %q, %v", buf[:k], err)
				}
			}
			time.Sleep(50 * time.Millisecond) // every reader back to waiting
			runtime.GC()
			runtime.ReadMemStats(&after)
			per := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			t.Logf("%d idle %s associations: %d bytes of heap each (client and peer)", n, network, per)
			if per > 32<<10 {
				t.Errorf("an idle association holds %d bytes of heap, want well under a 64 KiB buffer", per)
			}
		})
	}
}
