// Package tuntest connects code that serves a TUN device to an application network
// stack in the same process, for tests: what the application sends arrives on the
// device as IP packets, as the kernel would deliver them after routing into a TUN.
package tuntest

import (
	"net/netip"
	"os"
	"sync"
	"testing"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/netstack"
)

// Pair returns a tun.Device for the code under test (which owns it and closes it) and
// the application's network (wireguard-go's tun/netstack) with the addresses addrs,
// wired together. The test's cleanup stops the wiring.
func Pair(t testing.TB, addrs ...netip.Addr) (tun.Device, *netstack.Net) {
	t.Helper()
	appDev, appNet, err := netstack.CreateNetTUN(addrs, nil, MTU)
	if err != nil {
		t.Fatal(err)
	}
	q := newQueueTUN()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // application → device
		defer wg.Done()
		bufs := [][]byte{make([]byte, 65536)}
		sizes := []int{0}
		for {
			// Keep draining the application's queue until it is closed, also after
			// the device was: an application stack that cannot send blocks.
			n, err := appDev.Read(bufs, sizes, 0)
			if err != nil {
				return
			}
			for i := 0; i < n; i++ {
				select {
				case q.in <- append([]byte(nil), bufs[i][:sizes[i]]...):
				case <-q.closed: // the device is gone: dropped, as by a kernel
				}
			}
		}
	}()
	go func() { // device → application
		defer wg.Done()
		for {
			select {
			case pkt := <-q.out:
				appDev.Write([][]byte{pkt}, 0)
			case <-q.closed:
				return
			}
		}
	}()
	t.Cleanup(func() {
		q.Close()
		appDev.Close()
		wg.Wait()
	})
	return q, appNet
}

// MTU is the MTU of both ends.
const MTU = 1420

// queueTUN is a tun.Device backed by buffered queues. Like a kernel TUN, writing to it
// never blocks: when the queue is full the packet is dropped.
type queueTUN struct {
	in, out   chan []byte
	closed    chan struct{}
	closeOnce sync.Once
}

func newQueueTUN() *queueTUN {
	return &queueTUN{in: make(chan []byte, 4096), out: make(chan []byte, 4096), closed: make(chan struct{})}
}

func (q *queueTUN) File() *os.File           { return nil }
func (q *queueTUN) MTU() (int, error)        { return MTU, nil }
func (q *queueTUN) Name() (string, error)    { return "queue0", nil }
func (q *queueTUN) Events() <-chan tun.Event { return nil }
func (q *queueTUN) BatchSize() int           { return 16 }

func (q *queueTUN) Close() error {
	q.closeOnce.Do(func() { close(q.closed) })
	return nil
}

func (q *queueTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case <-q.closed:
		return 0, os.ErrClosed
	case p := <-q.in:
		sizes[0] = copy(bufs[0][offset:], p)
		n := 1
		for n < len(bufs) {
			select {
			case p := <-q.in:
				sizes[n] = copy(bufs[n][offset:], p)
				n++
			default:
				return n, nil
			}
		}
		return n, nil
	}
}

func (q *queueTUN) Write(bufs [][]byte, offset int) (int, error) {
	select {
	case <-q.closed:
		return 0, os.ErrClosed
	default:
	}
	for _, b := range bufs {
		select {
		case q.out <- append([]byte(nil), b[offset:]...):
		default: // full: dropped, as a kernel would
		}
	}
	return len(bufs), nil
}
