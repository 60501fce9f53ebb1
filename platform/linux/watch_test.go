//go:build linux

package linux

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestWatchNetwork: an address added to the uplink is reported; one added to the
// ignored tunnel device is not.
func TestWatchNetwork(t *testing.T) {
	n := newTestNS(t)
	ns, err := netns.GetFromName(n.name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	w, err := WatchNetwork(WatchOptions{Ignore: testTUN, Namespace: &ns})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	tun, err := n.h.LinkByName(testTUN)
	must(t, err)
	// Teach the watcher the TUN's index, then drain.
	must(t, n.h.LinkSetMTU(tun, 1400))
	time.Sleep(200 * time.Millisecond)
	drain := func() {
		for {
			select {
			case <-w.C():
			case <-time.After(300 * time.Millisecond):
				return
			}
		}
	}
	drain()
	must(t, n.h.AddrAdd(tun, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("100.100.100.9/32"))}))
	select {
	case <-w.C():
		t.Fatal("a change of the ignored device was reported")
	case <-time.After(500 * time.Millisecond):
	}
	up, err := n.h.LinkByName("uplink0")
	must(t, err)
	must(t, n.h.AddrAdd(up, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("192.0.2.77/24"))}))
	select {
	case <-w.C():
	case <-time.After(3 * time.Second):
		t.Fatal("an address change of the uplink was not reported")
	}
}
