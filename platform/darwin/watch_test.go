package darwin

import (
	"context"
	"encoding/binary"
	"io"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// rtMsg builds a routing message of type typ about interface idx with
// route flags.
func rtMsg(typ byte, idx int, flags uint32) []byte {
	m := make([]byte, 92) // sizeof(struct rt_msghdr)
	binary.NativeEndian.PutUint16(m, uint16(len(m)))
	m[2] = rtmVersion
	m[3] = typ
	switch typ {
	case rtmAdd, rtmDelete, rtmChange, 0x4:
		binary.NativeEndian.PutUint16(m[offRtmIndex:], uint16(idx))
		binary.NativeEndian.PutUint32(m[offRtmFlags:], flags)
	default:
		binary.NativeEndian.PutUint16(m[offIfmIndex:], uint16(idx))
	}
	return m
}

func TestRouteMsgsRelevant(t *testing.T) {
	const utun = testTUNIndex
	for _, tc := range []struct {
		name string
		msg  []byte
		want bool
	}{
		{"route added on en0", rtMsg(rtmAdd, 4, 0x803), true},
		{"route deleted on en0", rtMsg(rtmDelete, 4, 0x803), true},
		{"route changed", rtMsg(rtmChange, 4, 0), true},
		{"route on the utun", rtMsg(rtmAdd, utun, 0x803), false},
		{"ARP entry", rtMsg(rtmAdd, 4, 0x405), false},
		{"cloned host route", rtMsg(rtmDelete, 4, 0x20005), false},
		{"route get", rtMsg(0x4, 4, 0), false},
		{"miss", rtMsg(0x7, 4, 0), false},
		{"address added", rtMsg(rtmNewAddr, 4, 0), true},
		{"address removed", rtMsg(rtmDelAddr, 4, 0), true},
		{"address on the utun", rtMsg(rtmNewAddr, utun, 0), false},
		{"link down", rtMsg(rtmIfInfo, 4, 0), true},
		{"utun link", rtMsg(rtmIfInfo, utun, 0), false},
		{"other version", func() []byte { m := rtMsg(rtmAdd, 4, 0); m[2] = 4; return m }(), false},
		{"truncated", rtMsg(rtmAdd, 4, 0)[:10], false},
		{"bad length", func() []byte { m := rtMsg(rtmAdd, 4, 0); m[0], m[1] = 0xff, 0xff; return m }(), false},
		{"ignored then relevant", append(rtMsg(rtmAdd, 4, 0x405), rtMsg(rtmIfInfo, 4, 0)...), true},
	} {
		if got := routeMsgsRelevant(tc.msg, utun); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// chanSource is a routing socket fed by the test, one message per Read.
type chanSource struct {
	msgs      chan []byte
	closed    chan struct{}
	closeOnce sync.Once
}

func newChanSource() *chanSource {
	return &chanSource{msgs: make(chan []byte), closed: make(chan struct{})}
}

func (s *chanSource) Read(b []byte) (int, error) {
	select {
	case m := <-s.msgs:
		return copy(b, m), nil
	case <-s.closed:
		return 0, io.EOF
	}
}

func (s *chanSource) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

func TestWatchNetwork(t *testing.T) {
	sw := &switchable{iface: "en0"}
	var refreshes int
	var mu sync.Mutex
	runner := &fakeRunner{respond: func(line, stdin string) ([]byte, error) {
		if line == routeCmd+" -n get -inet default" {
			mu.Lock()
			refreshes++
			mu.Unlock()
		}
		return sw.respond(line, stdin)
	}}
	b := NewBinder(BinderOptions{Ignore: testTUN, Runner: runner, ifIndex: fakeIfIndex, bind: (&bindRecorder{}).bind})
	if _, err := b.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	src := newChanSource()
	w, err := WatchNetwork(WatchOptions{
		Ignore:  testTUN,
		Refresh: func(ctx context.Context) error { _, err := b.Refresh(ctx); return err },
		Logger:  zaptest.NewLogger(t),
		source:  func() (io.ReadCloser, error) { return src, nil },
		ifIndex: fakeIfIndex,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	// Noise: the tunnel's own routes, ARP, lookups. Each send returns once
	// the reader took the message, so by the time the relevant message
	// below is taken, these were all judged.
	for _, m := range [][]byte{rtMsg(rtmAdd, testTUNIndex, 0x803), rtMsg(rtmAdd, 4, 0x405), rtMsg(0x4, 4, 0)} {
		src.msgs <- m
	}
	// Wi-Fi to Ethernet: the default route moves to en5.
	sw.set("en5")
	src.msgs <- rtMsg(rtmAdd, 7, 0x803)
	select {
	case <-w.C():
	case <-time.After(10 * time.Second):
		t.Fatal("no change reported")
	}
	if v4, _ := b.Interfaces(); v4 != 7 {
		t.Errorf("after the change the binder uses interface %d, want 7 (en5)", v4)
	}
	mu.Lock()
	n := refreshes
	mu.Unlock()
	if n != 2 { // the test's own, and the change's
		t.Errorf("%d refreshes, want 2: noise was taken for a change", n)
	}
}

// Close ends the watcher even while its reader waits for a message.
func TestWatchNetworkClose(t *testing.T) {
	src := newChanSource()
	w, err := WatchNetwork(WatchOptions{source: func() (io.ReadCloser, error) { return src, nil }, ifIndex: fakeIfIndex})
	if err != nil {
		t.Fatal(err)
	}
	w.Close() // goleak in TestMain checks that both goroutines ended
}
