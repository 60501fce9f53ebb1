package darwin

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"go.uber.org/zap"
)

// WatchOptions configures WatchNetwork.
type WatchOptions struct {
	// Ignore is the name of an interface whose changes do not count: the
	// tunnel's own utun.
	Ignore string
	// Refresh, if set, is called after every change (a burst of changes:
	// once) and before C receives it, e.g. to move the Exclude routes to
	// a new gateway (Router.Refresh) and bind the next dial to the new
	// interface (Binder.Refresh). Its error is logged.
	Refresh func(ctx context.Context) error
	// Logger receives the errors of Refresh; nil discards them.
	Logger *zap.Logger

	// Seams for tests; the zero values are the real thing.
	source  func() (io.ReadCloser, error)  // nil: a PF_ROUTE socket
	ifIndex func(name string) (int, error) // nil: net.InterfaceByName
}

// Watcher reports changes of the machine's network, read from the routing
// socket (PF_ROUTE): a link going up or down, an address or a route
// appearing or disappearing — what happens when Wi-Fi roams, a cable is
// plugged or a phone's hotspot comes back. Changes are coalesced.
type Watcher struct {
	c      chan struct{}
	cancel context.CancelFunc
	src    io.ReadCloser
	wg     sync.WaitGroup
}

// C receives a value after one or more changes.
func (w *Watcher) C() <-chan struct{} { return w.c }

// Close stops watching and waits for the watcher's goroutines.
func (w *Watcher) Close() {
	w.cancel()
	w.src.Close() // ends the reader's Read
	w.wg.Wait()
}

// WatchNetwork starts a Watcher. It is macOS's only, but for tests.
func WatchNetwork(o WatchOptions) (*Watcher, error) {
	if o.source == nil {
		o.source = openRouteSocket
	}
	if o.ifIndex == nil {
		o.ifIndex = func(name string) (int, error) {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return 0, err
			}
			return ifi.Index, nil
		}
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ignore := -1
	if o.Ignore != "" {
		if i, err := o.ifIndex(o.Ignore); err == nil {
			ignore = i
		}
	}
	src, err := o.source()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{c: make(chan struct{}, 1), cancel: cancel, src: src}
	dirty := make(chan struct{}, 1)
	w.wg.Add(2)
	go func() { // reads the routing socket until Close closes it
		defer w.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := src.Read(buf)
			if err != nil && !errors.Is(err, errOverflow) {
				return
			}
			// A lost message (overflow) may have been a change.
			if err != nil || routeMsgsRelevant(buf[:n], ignore) {
				select {
				case dirty <- struct{}{}:
				default:
				}
			}
		}
	}()
	go func() { // refreshes and signals, once per burst
		defer w.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-dirty:
			}
			if o.Refresh != nil {
				if err := o.Refresh(ctx); err != nil && ctx.Err() == nil {
					log.Warn("following the network change", zap.Error(err))
				}
			}
			select {
			case w.c <- struct{}{}:
			default:
			}
		}
	}()
	return w, nil
}
