package transport

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

func TestRTTStatsBase(t *testing.T) {
	var r rttStats
	if b := r.base(); b != time.Millisecond {
		t.Fatalf("base before any sample = %v, want 1ms", b)
	}
	t0 := time.Unix(1000, 0)
	sample := func(at time.Time, rtt time.Duration) { r.add(at.Add(-rtt), at) }
	sample(t0, 5*time.Millisecond)
	sample(t0.Add(time.Second), 3*time.Millisecond)
	sample(t0.Add(2*time.Second), 40*time.Millisecond) // queued: not the base
	if b := r.base(); b != 3*time.Millisecond {
		t.Fatalf("base = %v, want the least sample, 3ms", b)
	}
	if s := r.smoothedRTT(); s <= 3*time.Millisecond || s >= 40*time.Millisecond {
		t.Fatalf("smoothed RTT = %v, want between the samples", s)
	}
	// A new window: the old minimum still counts, a loaded sample does not replace it.
	sample(t0.Add(minRTTWindow+time.Second), 30*time.Millisecond)
	if b := r.base(); b != 3*time.Millisecond {
		t.Fatalf("base one window later = %v, want 3ms still", b)
	}
	// Another window: the 3 ms are forgotten; the least of the previous window counts.
	sample(t0.Add(2*minRTTWindow+2*time.Second), 50*time.Millisecond)
	if b := r.base(); b != 30*time.Millisecond {
		t.Fatalf("base two windows later = %v, want 30ms", b)
	}
	// Silence for more than a window: only the new sample counts.
	sample(t0.Add(5*minRTTWindow), 8*time.Millisecond)
	if b := r.base(); b != 8*time.Millisecond {
		t.Fatalf("base after a silence = %v, want 8ms", b)
	}
}

func TestRTTStatsQueueSince(t *testing.T) {
	var r rttStats
	t0 := time.Unix(1000, 0)
	ping := func(sent time.Time, rtt time.Duration) { r.add(sent, sent.Add(rtt)) }
	ping(t0, 10*time.Millisecond) // the base
	ping(t0.Add(100*time.Millisecond), 30*time.Millisecond)
	ping(t0.Add(200*time.Millisecond), 25*time.Millisecond)
	ping(t0.Add(300*time.Millisecond), 40*time.Millisecond)
	now := t0.Add(400 * time.Millisecond)

	base, q, n := r.queueSince(t0.Add(50*time.Millisecond), now)
	if base != 10*time.Millisecond || q != 15*time.Millisecond || n != 3 {
		t.Fatalf("queueSince(50ms) = %v, %v, %d; want 10ms, 15ms (least of 30, 25, 40 minus 10), 3", base, q, n)
	}
	if _, q, n := r.queueSince(t0.Add(250*time.Millisecond), now); q != 30*time.Millisecond || n != 1 {
		t.Fatalf("queueSince(250ms) = %v, %d; want only the PING sent after: 30ms, 1", q, n)
	}
	if _, _, n := r.queueSince(t0.Add(350*time.Millisecond), now); n != 0 {
		t.Fatalf("queueSince(350ms) counted %d samples, want none", n)
	}
	if _, _, n := r.queueSince(time.Time{}, now.Add(recentMaxAge)); n != 0 {
		t.Fatalf("%d samples older than recentMaxAge counted", n)
	}
}

func TestRTTStatsProbe(t *testing.T) {
	var r rttStats
	t0 := time.Unix(1000, 0)
	key, ok := r.startProbe(t0)
	if !ok {
		t.Fatal("first probe refused")
	}
	if _, ok := r.startProbe(t0.Add(10 * time.Millisecond)); ok {
		t.Fatal("second probe while the first is unanswered")
	}
	r.pong([8]byte{1}) // another PING's answer
	if _, ok := r.startProbe(t0.Add(20 * time.Millisecond)); ok {
		t.Fatal("probe after the answer to another PING")
	}
	r.pong(key)
	if _, ok := r.startProbe(t0.Add(probeGap / 2)); ok {
		t.Fatal("probe within probeGap of the last")
	}
	k2, ok := r.startProbe(t0.Add(30 * time.Millisecond))
	if !ok || k2 == key {
		t.Fatalf("probe after the answer: ok %v, same key %v", ok, k2 == key)
	}
	if _, ok := r.startProbe(t0.Add(30*time.Millisecond + probeLost)); !ok {
		t.Fatal("no new probe after the last was lost")
	}
}

func TestWindowChange(t *testing.T) {
	const (
		floor = 256 << 10
		limit = 16 << 20
		ms    = time.Millisecond
	)
	for _, c := range []struct {
		name  string
		win   int
		fast  bool
		queue time.Duration
		n     int
		want  int
	}{
		{"no sample yet", 1 << 20, true, 0, 0, 0},
		{"short queue, fast: doubles", 1 << 20, true, 1 * ms, 1, 1 << 20},
		{"up to the target: doubles", 1 << 20, true, 10 * ms, 1, 1 << 20},
		{"short queue, not fast: holds", 1 << 20, false, 1 * ms, 1, 0},
		{"a lost packet's RTT: a quarter", 1 << 20, true, 20 * ms, 2, 256 << 10},
		{"up to three times the target: a quarter", 1 << 20, true, 30 * ms, 1, 256 << 10},
		{"at the limit", limit, true, 0, 1, 0},
		{"doubling stops at the limit", 12 << 20, true, 0, 1, 4 << 20},
		{"in the band: holds", 1 << 20, true, 35 * ms, 3, 0},
		{"beyond four times: a quarter less", 1 << 20, false, 45 * ms, 2, -(256 << 10)},
		{"beyond eight times: half", 1 << 20, true, 90 * ms, 2, -(512 << 10)},
		{"one sample does not shrink", 1 << 20, true, 90 * ms, 1, 0},
		{"not below the floor", 300 << 10, false, 90 * ms, 4, -(44 << 10)},
		{"at the floor", floor, false, 90 * ms, 4, 0},
	} {
		if got := windowChange(c.win, floor, limit, c.fast, c.queue, c.n, 10*ms); got != c.want {
			t.Errorf("%s: windowChange(%d, queue %v, %d samples) = %d, want %d", c.name, c.win, c.queue, c.n, got, c.want)
		}
	}
	if got := queueTarget(40 * ms); got != 20*ms {
		t.Errorf("queueTarget(40ms) = %v, want 20ms", got)
	}
	if got := queueTarget(100 * time.Microsecond); got != minQueueTarget {
		t.Errorf("queueTarget(100µs) = %v, want %v", got, minQueueTarget)
	}
}

// TestPongBehindData: a PING is answered behind the stream data already queued, so
// that the other side's RTT includes that queue.
func TestPongBehindData(t *testing.T) {
	s := &session{done: make(chan struct{}), space: make(chan struct{}), wake: newNotify(),
		peerMaxFrame: 64 << 10, cfg: Config{WriteBuffer: 1 << 20}}
	if err := s.queueData(1, []byte("bulk"), false, nil, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	if err := s.queuePong([8]byte{7}); err != nil {
		t.Fatal(err)
	}
	if err := s.queueData(1, []byte("more"), false, nil, nil, nil, false); err != nil {
		t.Fatal(err)
	}
	var got []wire.Type
	for b := s.data; len(b) > 0; {
		h, err := wire.ParseHeader(b, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Type)
		b = b[wire.HeaderLen+int(h.Length):]
	}
	if len(got) != 3 || got[0] != wire.TypeData || got[1] != wire.TypePing || got[2] != wire.TypeData {
		t.Fatalf("queued frames %v, want DATA, PING, DATA (the second DATA not merged into the first)", got)
	}
	if len(s.pri) != 0 {
		t.Fatal("the answer went to the priority queue")
	}
}

// slowLink is a net.Conn whose reading side is a link of a fixed rate and one-way
// delay: what the other side sends waits in its socket buffers and then in the link,
// like data behind a phone's Wi-Fi. A goroutine of its own moves the bytes; Close
// ends it.
type slowLink struct {
	net.Conn
	ch   chan slowChunk
	cur  []byte
	err  error
	wg   sync.WaitGroup
	once sync.Once
	stop chan struct{}
}

type slowChunk struct {
	b   []byte
	at  time.Time // when it may be read
	err error
}

func newSlowLink(c net.Conn, bytesPerSec int, delay time.Duration) *slowLink {
	l := &slowLink{Conn: c, ch: make(chan slowChunk, 64), stop: make(chan struct{})}
	l.wg.Go(func() {
		next := time.Now()
		for {
			b := make([]byte, 8<<10)
			n, err := c.Read(b)
			// Pace: the link carries bytesPerSec.
			next = later(next, time.Now()).Add(time.Duration(n) * time.Second / time.Duration(bytesPerSec))
			time.Sleep(time.Until(next))
			select {
			case l.ch <- slowChunk{b: b[:n], at: time.Now().Add(delay), err: err}:
			case <-l.stop:
				return
			}
			if err != nil {
				return
			}
		}
	})
	return l
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (l *slowLink) Read(p []byte) (int, error) {
	for len(l.cur) == 0 {
		if l.err != nil {
			return 0, l.err
		}
		select {
		case c := <-l.ch:
			time.Sleep(time.Until(c.at))
			l.cur, l.err = c.b, c.err
		case <-l.stop:
			return 0, net.ErrClosed
		}
	}
	n := copy(p, l.cur)
	l.cur = l.cur[n:]
	return n, nil
}

func (l *slowLink) Close() error {
	err := l.Conn.Close()
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return err
}

// TestWindowFollowsQueue: on a slow link with a long delay, a download's window
// grows to cover the bandwidth-delay product but stops where the queue its data makes
// (every other stream's data waits behind it) reaches its bound: here about 1 MiB
// (the link holds 512 KiB besides the socket buffers). Sized by consumption speed
// alone, it grew to 2 MiB.
func TestWindowFollowsQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 12 MiB over an 8 MB/s link")
	}
	const (
		rate  = 8 << 20
		delay = 20 * time.Millisecond
		total = 12 << 20
	)
	h := newHarness(t, nil)
	s := h.dial(&DialOptions{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return newSlowLink(c, rate, delay), nil
		},
		Config: &Config{InitialWindow: 64 << 10, MaxWindow: 16 << 20},
	})
	st := openDownload(t, s, total)
	buf := make([]byte, 64<<10)
	got, largest := 0, 0
	for {
		n, err := st.Read(buf)
		got += n
		st.mu.Lock()
		largest = max(largest, st.recvWindow)
		st.mu.Unlock()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	base, _, _ := s.s.rtt.queueSince(time.Time{}, time.Now())
	t.Logf("%d bytes; largest window %d KiB; base RTT %v; smoothed RTT %v", got, largest>>10, base, s.RTT())
	if got != total {
		t.Fatalf("received %d bytes, want %d", got, total)
	}
	if largest <= 64<<10 {
		t.Fatal("the window never grew: the test tests nothing")
	}
	if largest >= 3<<19 {
		t.Fatalf("the window grew to %d KiB; the queue's bound keeps it near 1 MiB", largest>>10)
	}
}
