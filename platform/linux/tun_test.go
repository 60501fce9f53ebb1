//go:build linux

package linux

import (
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// inNS runs f on a thread inside n. Unlike the other tests here, OpenTUN has to
// run in the namespace: a TUN is created in the namespace of the thread that opened
// the clone device. A thread that cannot get back is left locked, so that it dies
// with the goroutine.
func (n *testNS) inNS(t *testing.T, f func()) {
	t.Helper()
	target, err := netns.GetFromName(n.name)
	must(t, err)
	defer target.Close()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			t.Errorf("leaving the namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	f()
}

// TestOpenTUN: the descriptor OpenTUN returns is a TUN with the virtio-net header,
// in the caller's namespace, that wireguard-go takes on its offload path and that
// carries packets; a second open of the same name says who holds it.
func TestOpenTUN(t *testing.T) {
	n := newTestNS(t)
	const name = "ttun1"
	var fd, fd2 int
	var err, err2 error
	var sock int
	n.inNS(t, func() {
		fd, err = OpenTUN(name)
		fd2, err2 = OpenTUN(name)
		sock, _ = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	})
	if err != nil {
		t.Fatal(err)
	}
	if sock > 0 {
		defer unix.Close(sock)
	}
	if err2 == nil {
		unix.Close(fd2)
		t.Fatal("a second OpenTUN of an attached TUN worked")
	}
	if !strings.Contains(err2.Error(), "another program holds it") {
		t.Errorf("second open: %v; want it to say the TUN is held", err2)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("%s appeared in the test's own namespace", name)
	}
	link, err := n.h.LinkByName(name)
	must(t, err)
	if tt, ok := link.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TUN {
		t.Fatalf("%s is %T %+v, want a TUN", name, link, link)
	}
	ifr, err := unix.NewIfreq(name)
	must(t, err)
	must(t, unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr))
	want := uint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if got := ifr.Uint16(); got&want != want {
		t.Fatalf("TUN flags %#x, want %#x set", got, want)
	}

	dev, gotName, err := tun.CreateUnmonitoredTUNFromFD(fd)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			dev.Close()
		}
	}()
	if gotName != name {
		t.Errorf("wireguard-go names it %q, want %q", gotName, name)
	}
	if dev.BatchSize() <= 1 {
		t.Errorf("wireguard-go batch size %d: not on the offload path", dev.BatchSize())
	}

	// A datagram sent into the TUN's network comes out of the descriptor.
	must(t, n.h.LinkSetUp(link))
	must(t, n.h.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.99.0.1/24"))}))
	payload := []byte("through the tun")
	to := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{10, 99, 0, 2}}
	got := make(chan []byte, 1)
	go func() {
		bufs := [][]byte{make([]byte, 65536)}
		sizes := make([]int, 1)
		for {
			k, err := dev.Read(bufs, sizes, 0)
			if err != nil {
				close(got)
				return
			}
			for i := range k {
				p := bufs[i][:sizes[i]]
				if len(p) >= 28 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_UDP && net.IP(p[16:20]).Equal(net.IPv4(10, 99, 0, 2)) {
					got <- append([]byte(nil), p[28:]...)
					return
				}
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := unix.Sendto(sock, payload, 0, to); err != nil {
			t.Fatalf("send into the TUN's network: %v", err)
		}
		select {
		case p, ok := <-got:
			if !ok {
				t.Fatal("the TUN's Read failed")
			}
			if string(p) != string(payload) {
				t.Fatalf("read %q from the TUN, want %q", p, payload)
			}
			dev.Close()
			closed = true
			// Not persistent: the interface goes with its descriptor.
			for time.Now().Before(deadline) {
				if _, err := n.h.LinkByName(name); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Fatalf("%s still exists after its descriptor closed", name)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing came out of the TUN in 5 s")
		}
	}
}

// TestOpenTUNErrors: a name that is not a valid interface name, and one that an
// interface of another kind holds, get errors that say so.
func TestOpenTUNErrors(t *testing.T) {
	n := newTestNS(t)
	var errLong, errVeth error
	n.inNS(t, func() {
		_, errLong = OpenTUN(strings.Repeat("x", 20))
		_, errVeth = OpenTUN("uplink0") // a veth, made by newTestNS
	})
	if errLong == nil || !strings.Contains(errLong.Error(), "TUN name") {
		t.Errorf("a 20-character name: %v", errLong)
	}
	if errVeth == nil || !strings.Contains(errVeth.Error(), "another kind") {
		t.Errorf("the name of a veth: %v", errVeth)
	}
}
