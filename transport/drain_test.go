package transport

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

// DrainTo never waits: it writes what is buffered and says whether the stream goes
// on (nil), finished (io.EOF) or died; OnReadable fires for each of those events.
func TestStreamDrainTo(t *testing.T) {
	step := make(chan string)
	dst := listen(t, func(c net.Conn) {
		defer c.Close()
		for msg := range step {
			if msg == "" {
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
				return
			}
			c.Write([]byte(msg))
		}
	})
	s := newHarness(t, nil).dial(nil)
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	kicks := readableKicks(st)
	var got bytes.Buffer
	// drainUntil calls DrainTo at each kick until want is reached or the error is
	// not nil.
	drainUntil := func(want string) error {
		deadline := time.After(5 * time.Second)
		for {
			_, err := st.DrainTo(&got)
			if err != nil || got.String() == want {
				return err
			}
			select {
			case <-kicks:
			case <-deadline:
				t.Fatalf("no OnReadable call; have %q, want %q", got.String(), want)
			}
		}
	}
	if n, err := st.DrainTo(&got); n != 0 || err != nil {
		t.Fatalf("DrainTo with nothing received = %d, %v; want 0, nil", n, err)
	}
	step <- "hello "
	if err := drainUntil("hello "); err != nil {
		t.Fatal(err)
	}
	step <- "world"
	if err := drainUntil("hello world"); err != nil {
		t.Fatal(err)
	}
	step <- ""
	close(step)
	if err := drainUntil("never"); err != io.EOF {
		t.Fatalf("after FIN: DrainTo = %v, want io.EOF", err)
	}
	if got.String() != "hello world" {
		t.Fatalf("drained %q", got.String())
	}
	st.Close()
	if _, err := st.DrainTo(&got); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after Close: DrainTo = %v, want net.ErrClosed", err)
	}
}

func TestStreamDrainToAfterReset(t *testing.T) {
	dst := listen(t, func(c net.Conn) {
		// Wait for the client's byte: a reset during the peer's connect would
		// refuse the open instead.
		io.ReadFull(c, make([]byte, 1))
		c.Write([]byte("partial"))
		c.(*net.TCPConn).SetLinger(0)
		c.Close() // RST
	})
	s := newHarness(t, nil).dial(nil)
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	kicks := readableKicks(st)
	var got bytes.Buffer
	for {
		_, err := st.DrainTo(&got)
		if err != nil {
			var se *StreamError
			if !errors.As(err, &se) || !se.Remote {
				t.Fatalf("DrainTo after the destination's reset = %v, want a remote *StreamError", err)
			}
			return
		}
		select {
		case <-kicks:
		case <-time.After(5 * time.Second):
			t.Fatal("the reset did not call OnReadable")
		}
	}
}

// An idle relay on the peer holds one goroutine (reading the destination), not two,
// and a relay that went idle still carries data both ways when it comes.
func TestServerIdleRelayGoroutines(t *testing.T) {
	const flows = 200
	pd := &pipeDests{}
	h := newHarness(t, func(s *Server) { s.Dial = pd.dial })
	s := h.dial(nil)
	dst := wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 9}
	settle := func() int {
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()
	streams := make([]*Stream, flows)
	for i := range streams {
		st, err := s.OpenTCP(ctxT(t), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		streams[i] = st
	}
	// A write to every stream starts and ends a pump on each.
	for i, st := range streams {
		if _, err := st.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	dests := pd.all()
	for i, d := range dests {
		b := make([]byte, 1)
		if _, err := io.ReadFull(d, b); err != nil || b[0] != byte(i) {
			t.Fatalf("destination %d read %v, %v", i, b, err)
		}
	}
	var extra int
	for deadline := time.Now().Add(5 * time.Second); ; {
		extra = settle() - before
		if extra <= flows+flows/10 || time.Now().After(deadline) {
			break
		}
	}
	if extra > flows+flows/10 {
		t.Fatalf("%d idle relayed flows hold %d goroutines, want about one each", flows, extra)
	}
	// Still relaying both ways after the idle period.
	d := dests[7]
	go d.Write([]byte("back"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(streams[7], b); err != nil || string(b) != "back" {
		t.Fatalf("read %q, %v", b, err)
	}
	if _, err := streams[7].Write([]byte("more")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(d, b); err != nil || string(b) != "more" {
		t.Fatalf("destination read %q, %v", b, err)
	}
	for _, d := range dests {
		d.Close()
	}
}

// readableKicks returns a channel that receives (without blocking the stream) at each
// OnReadable call of st.
func readableKicks(st *Stream) <-chan struct{} {
	kicks := make(chan struct{}, 1)
	st.OnReadable(func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	})
	return kicks
}

// pipeDests is a Server.Dial whose destinations are in-process pipes; it keeps their
// far ends.
type pipeDests struct {
	mu    sync.Mutex
	dests []net.Conn
}

func (p *pipeDests) dial(context.Context, string, string) (net.Conn, error) {
	a, d := net.Pipe()
	p.mu.Lock()
	p.dests = append(p.dests, d)
	p.mu.Unlock()
	return a, nil
}

func (p *pipeDests) all() []net.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.dests)
}

// relayGoroutines counts the goroutines running a relay direction on the peer.
func relayGoroutines() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte("transport.(*pumpRelay)")) || bytes.Contains(g, []byte("transport.(*Server).copyToStream")) {
			n++
		}
	}
	return n
}

// Relays to real sockets that have been idle for relayIdle hold no goroutine (the
// server's epoll watcher has them), and wake up for data, EOF and resets.
func TestServerIdleRelaysPark(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the idle watcher is Linux-only")
	}
	const flows = 50
	conns := make(chan net.Conn, flows)
	dst := listen(t, func(c net.Conn) { conns <- c })
	s := newHarness(t, nil).dial(nil)
	streams := make([]*Stream, flows)
	dests := make([]net.Conn, flows)
	for i := range streams {
		st, err := s.OpenTCP(ctxT(t), dst)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		streams[i] = st
		dests[i] = <-conns
		defer dests[i].Close()
		// One exchange each way, then silence.
		dests[i].Write([]byte("hi"))
		b := make([]byte, 2)
		if _, err := io.ReadFull(st, b); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	for deadline := time.Now().Add(relayIdle + 5*time.Second); ; {
		if n = relayGoroutines(); n == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n != 0 {
		t.Fatalf("%d relay goroutines for %d flows idle longer than %v", n, flows, relayIdle)
	}
	// Data wakes a parked relay.
	dests[3].Write([]byte("wake"))
	b := make([]byte, 4)
	if _, err := io.ReadFull(streams[3], b); err != nil || string(b) != "wake" {
		t.Fatalf("parked relay: read %q, %v", b, err)
	}
	// EOF from a parked destination is a clean end of the stream.
	dests[5].(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(streams[5]); err != nil || len(b) != 0 {
		t.Fatalf("after the destination's FIN: %q, %v; want EOF", b, err)
	}
	// A reset of a parked destination resets the stream.
	dests[7].(*net.TCPConn).SetLinger(0)
	dests[7].Close()
	_, err := streams[7].Read(b)
	var se *StreamError
	if !errors.As(err, &se) || se.Code != wire.CodeConnReset {
		t.Fatalf("after the destination's reset: %v; want a CONN_RESET stream error", err)
	}
	// The client closing a stream whose relay is parked ends the relay and its
	// destination connection.
	streams[9].Close()
	dests[9].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(dests[9]); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("destination of a closed stream: %v", err)
	}
}
