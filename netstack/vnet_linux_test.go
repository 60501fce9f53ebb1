//go:build linux

package netstack

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/tetherd/tetherd/internal/testnet"
	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// TestOffloadPathRealTUN runs the Stack on a real Linux TUN (wireguard-go's, with
// virtio-net headers) in a network namespace of its own: the kernel's TCP sends
// 8 MiB into the tunnel and receives 8 MiB back, over IPv4 and IPv6. The link must
// take the offload path, the kernel's TSO super-packets must reach gVisor whole and
// gVisor's GSO segments must reach the kernel whole, and every byte must arrive
// (sha256) — which also proves the partial checksums were completed correctly.
func TestOffloadPathRealTUN(t *testing.T) {
	const size = 8 << 20
	reply := make([]byte, size)
	rand.Read(reply)
	gotUp := make(chan [32]byte, 2)
	echo := testnet.ServeUDPEcho(t)
	srv := listenTCP(t, func(c net.Conn) {
		defer c.Close()
		h := sha256.New()
		io.Copy(h, c)
		gotUp <- [32]byte(h.Sum(nil))
		c.Write(reply)
	})
	ns, v := newOffloadStack(t, &fakeHandler{tcpTarget: to(srv), udpTarget: echo.String()})
	for _, dst := range []string{"10.77.0.2:80", "[fd77::2]:80"} {
		t.Run(dst, func(t *testing.T) {
			in, out := v.superIn.Load(), v.superOut.Load()
			c := ns.dial(t, dst)
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			exchangeHalfClose(t, c.(*net.TCPConn), size, reply, gotUp)
			in, out = v.superIn.Load()-in, v.superOut.Load()-out
			t.Logf("super-packets: %d read, %d written", in, out)
			// 8 MiB in 64 KiB super-packets is 128; allow for smaller ones.
			if in < 16 || out < 16 {
				t.Fatalf("super-packets: %d read, %d written; want both ≥ 16", in, out)
			}
		})
	}
	// UDP crosses the offload path as plain packets, with the kernel's checksums
	// possibly partial on the way in and gVisor's complete on the way out (the
	// kernel drops a datagram with a bad one).
	for _, dst := range []string{"10.77.0.2:53", "[fd77::2]:53"} {
		t.Run("udp "+dst, func(t *testing.T) {
			var c net.Conn
			var err error
			ns.in(t, func() { c, err = net.Dial("udp", dst) })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 1200)
			rand.Read(msg)
			got := make([]byte, 2048)
			for try := 0; ; try++ {
				c.Write(msg)
				c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				n, err := c.Read(got)
				if err == nil && string(got[:n]) == string(msg) {
					return
				}
				if try == 5 {
					t.Fatalf("no echo: %d bytes, %v", n, err)
				}
			}
		})
	}
}

// testNetns is a network namespace made with `ip netns add` for one test and deleted
// after it. No thread of the test binary stays in it: the TUN and the sockets are
// created on a locked thread that enters it and goes back.
type testNetns struct {
	name string
	h    netns.NsHandle
}

func newTestNetns(t testing.TB) *testNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace and a TUN)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command")
	}
	name := fmt.Sprintf("ttns-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	h, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return &testNetns{name: name, h: h}
}

// ip runs `ip -n NAME args...`.
func (n *testNetns) ip(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", n.name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// in runs f on a thread inside the namespace.
func (n *testNetns) in(t testing.TB, f func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(n.h); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			// The thread cannot be trusted any more: let it die with the
			// goroutine instead of going back to the pool.
			runtime.LockOSThread()
			t.Errorf("leaving the namespace: %v", err)
		}
	}()
	f()
}

func (n *testNetns) createTUN(t testing.TB, name string, mtu int) tun.Device {
	t.Helper()
	var dev tun.Device
	var err error
	n.in(t, func() { dev, err = tun.CreateTUN(name, mtu) })
	if err != nil {
		t.Fatalf("create TUN: %v", err)
	}
	return dev
}

// newOffloadStack makes a namespace with a TUN, tvnet0 (10.77.0.1/24, fd77::1/64),
// and a Stack on it with handler, closed at the end of the test; the link must have
// taken the offload path, whose vnetIO it returns.
func newOffloadStack(t *testing.T, handler Handler) (*testNetns, *vnetIO) {
	t.Helper()
	ns := newTestNetns(t)
	dev := ns.createTUN(t, "tvnet0", 1500)
	ns.ip(t, "link", "set", "tvnet0", "up")
	ns.ip(t, "addr", "add", "10.77.0.1/24", "dev", "tvnet0")
	ns.ip(t, "-6", "addr", "add", "fd77::1/64", "dev", "tvnet0", "nodad")
	// The MTU is given: the device's MTU() asks in the test's own namespace.
	st, err := New(dev, handler, Options{MTU: 1500, Logger: zaptest.NewLogger(t), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if st.link.vnet == nil {
		t.Fatal("a wireguard-go TUN on Linux did not take the offload path")
	}
	return ns, st.link.vnet
}

// dial connects to addr from the namespace (the socket stays in it).
func (n *testNetns) dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	n.in(t, func() { c, err = net.DialTimeout("tcp", addr, 5*time.Second) })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// BenchmarkTUNPath moves bulk TCP through a real TUN: a kernel socket in a namespace
// of its own, the Stack, and a loopback TCP destination, up (the kernel sends) and
// down, on the offload path and on the Read/Write path (the same device with its file
// hidden, as a TUN handed over as a descriptor would be). cpu-ns/KiB is the whole
// process's CPU, which includes the kernel's TCP work for the socket at either end:
//
//	sudo go test -run '^$' -bench TUNPath -count 3 ./netstack/
func BenchmarkTUNPath(b *testing.B) {
	for _, path := range []string{"offload", "readwrite"} {
		for _, dir := range []string{"up", "down"} {
			b.Run(path+"/"+dir, func(b *testing.B) { benchTUNPath(b, path == "offload", dir == "up") })
		}
	}
}

// hiddenFile is a tun.Device whose file is not shown: the link uses Read and Write.
type hiddenFile struct{ tun.Device }

func (hiddenFile) File() *os.File { return nil }

func benchTUNPath(b *testing.B, offload, up bool) {
	ns := newTestNetns(b)
	var dev tun.Device = ns.createTUN(b, "tvnet0", 1500)
	ns.ip(b, "link", "set", "tvnet0", "up")
	ns.ip(b, "addr", "add", "10.77.0.1/24", "dev", "tvnet0")
	if !offload {
		dev = hiddenFile{dev}
	}
	const chunk = 64 << 10
	total := int64(b.N) * chunk
	moved := make(chan int64, 1)
	srv := testnet.ServeTCP(b, func(c net.Conn) {
		defer c.Close()
		var n int64
		if up {
			n, _ = io.Copy(io.Discard, c)
		} else {
			n, _ = io.CopyN(c, zeroReader{}, total)
		}
		moved <- n
	})
	st, err := New(dev, &fakeHandler{tcpTarget: to(srv.String())}, Options{MTU: 1500, DialTimeout: 3 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if (st.link.vnet != nil) != offload {
		b.Fatalf("offload path %v, want %v", st.link.vnet != nil, offload)
	}
	c := ns.dial(b, "10.77.0.2:80")
	defer c.Close()
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	b.ResetTimer()
	report := cpuPerKiB(b)
	var n int64
	if up {
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		c.(*net.TCPConn).CloseWrite()
		n = <-moved
	} else {
		n, _ = io.Copy(io.Discard, c)
		<-moved
	}
	b.StopTimer()
	if n != total {
		b.Fatalf("moved %d bytes, want %d", n, total)
	}
	report(total)
}

// zeroReader reads zeros without end.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestVnetWritePieces: a packet whose bytes lie in more pieces than one writev takes
// (a segment made of many small writes) is copied and written whole, like one in a
// few pieces: virtio-net header, IP and TCP headers, payload in order.
func TestVnetWritePieces(t *testing.T) {
	for _, pieces := range []int{3, vnetMaxIovs + 36} {
		t.Run(fmt.Sprint(pieces), func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			rc, err := w.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			v := &vnetIO{rc: rc}
			var payload buffer.Buffer
			var want []byte
			for i := range pieces {
				piece := bytes.Repeat([]byte{byte(i + 1)}, 64) // a full chunk: not merged with the next
				payload.Append(buffer.NewViewWithData(piece))
				want = append(want, piece...)
			}
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{ReserveHeaderBytes: 60, Payload: payload})
			defer pkt.DecRef()
			copy(pkt.TransportHeader().Push(20), bytes.Repeat([]byte{0xee}, 20))
			copy(pkt.NetworkHeader().Push(20), bytes.Repeat([]byte{0xdd}, 20))
			if got := len(pkt.AsSlices()); (got > vnetMaxIovs) != (pieces > vnetMaxIovs) {
				t.Fatalf("%d pieces in the packet buffer", got)
			}
			want = append(append(append(make([]byte, vnetHdrLen), bytes.Repeat([]byte{0xdd}, 20)...), bytes.Repeat([]byte{0xee}, 20)...), want...)
			if err := v.write(pkt); err != nil {
				t.Fatal(err)
			}
			w.Close()
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("wrote %d bytes (%v), want %d:\n%x\n%x", len(got), err, len(want), got, want)
			}
		})
	}
}
