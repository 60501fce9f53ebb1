//go:build linux

package linux

import (
	"context"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchOptions configures WatchNetwork.
type WatchOptions struct {
	// Ignore is the name of a link whose changes do not count: the tunnel's own
	// device.
	Ignore string
	// Namespace, if set, is the network namespace to watch (tests); nil means the
	// current one.
	Namespace *netns.NsHandle
}

// Watcher reports changes of the machine's network: a link going up or down, an
// address or a main-table route appearing or disappearing — what happens when Wi-Fi
// roams, a cable is plugged or a phone's hotspot comes back. Changes are coalesced.
type Watcher struct {
	c      chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// C receives a value after one or more changes.
func (w *Watcher) C() <-chan struct{} { return w.c }

// Close stops watching and waits for the watcher's goroutine.
func (w *Watcher) Close() {
	w.cancel()
	w.wg.Wait()
}

// WatchNetwork starts a Watcher (netlink multicast subscriptions, no polling).
func WatchNetwork(o WatchOptions) (*Watcher, error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	links := make(chan netlink.LinkUpdate, 32)
	addrs := make(chan netlink.AddrUpdate, 32)
	routes := make(chan netlink.RouteUpdate, 32)
	fail := func(what string, err error) (*Watcher, error) {
		close(done)
		cancel()
		return nil, fmt.Errorf("watch %s: %w", what, err)
	}
	if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{Namespace: o.Namespace}); err != nil {
		return fail("links", err)
	}
	if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{Namespace: o.Namespace}); err != nil {
		return fail("addresses", err)
	}
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: o.Namespace}); err != nil {
		return fail("routes", err)
	}
	w := &Watcher{c: make(chan struct{}, 1), cancel: cancel}
	ignored := -1 // ifindex of o.Ignore, learned from its link updates
	signal := func() {
		select {
		case w.c <- struct{}{}:
		default:
		}
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		defer close(done) // ends the subscriptions
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-links:
				if !ok {
					return
				}
				if u.Attrs().Name == o.Ignore {
					ignored = u.Attrs().Index
					continue
				}
				signal()
			case u, ok := <-addrs:
				if !ok {
					return
				}
				if u.LinkIndex != ignored {
					signal()
				}
			case u, ok := <-routes:
				if !ok {
					return
				}
				if u.Table == unix.RT_TABLE_MAIN && u.LinkIndex != ignored {
					signal()
				}
			}
		}
	}()
	return w, nil
}
