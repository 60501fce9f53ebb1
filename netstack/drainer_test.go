package netstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// echoDrainer is an in-memory remote with readiness callbacks, like a
// transport.Stream: what the relay writes to it becomes readable from it (an echo),
// and its CloseWrite comes back as the end of the echo.
type echoDrainer struct {
	mu      sync.Mutex
	buf     []byte
	eof     bool  // CloseWrite was called: EOF once buf is drained
	err     error // fail or Close
	hook    func()
	written int
	// holdOpen: CloseWrite does not end the echo (a remote that keeps sending).
	holdOpen   bool
	halfClosed bool
}

var _ Drainer = (*echoDrainer)(nil)

func (e *echoDrainer) kick() {
	e.mu.Lock()
	f := e.hook
	e.mu.Unlock()
	if f != nil {
		f()
	}
}

func (e *echoDrainer) OnReadable(f func()) {
	e.mu.Lock()
	e.hook = f
	e.mu.Unlock()
}

func (e *echoDrainer) DrainTo(w io.Writer) (int64, error) {
	var total int64
	for {
		e.mu.Lock()
		b := e.buf
		e.buf = nil
		eof, err := e.eof, e.err
		e.mu.Unlock()
		if len(b) == 0 {
			switch {
			case err != nil:
				return total, err
			case eof:
				return total, io.EOF
			}
			return total, nil
		}
		n, werr := w.Write(b)
		total += int64(n)
		if werr != nil {
			return total, werr
		}
	}
}

func (e *echoDrainer) Write(p []byte) (int, error) {
	e.mu.Lock()
	if e.err != nil || e.eof {
		e.mu.Unlock()
		return 0, net.ErrClosed
	}
	e.buf = append(e.buf, p...)
	e.written += len(p)
	e.mu.Unlock()
	e.kick()
	return len(p), nil
}

func (e *echoDrainer) CloseWrite() error {
	e.mu.Lock()
	e.halfClosed = true
	e.eof = !e.holdOpen
	e.mu.Unlock()
	e.kick()
	return nil
}

func (e *echoDrainer) fail(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
	e.kick()
}

func (e *echoDrainer) Abort()       { e.fail(errors.New("aborted")) }
func (e *echoDrainer) Close() error { e.fail(net.ErrClosed); return nil }

func (e *echoDrainer) Read([]byte) (int, error)         { return 0, errors.New("echoDrainer: use DrainTo") }
func (e *echoDrainer) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (e *echoDrainer) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (e *echoDrainer) SetDeadline(time.Time) error      { return nil }
func (e *echoDrainer) SetReadDeadline(time.Time) error  { return nil }
func (e *echoDrainer) SetWriteDeadline(time.Time) error { return nil }

// drainHandler dials echoDrainers and keeps them.
type drainHandler struct {
	fakeHandler
	holdOpen bool
	mu       sync.Mutex
	remotes  []*echoDrainer
}

func (h *drainHandler) DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error) {
	e := &echoDrainer{holdOpen: h.holdOpen}
	h.mu.Lock()
	h.remotes = append(h.remotes, e)
	h.mu.Unlock()
	return e, nil
}

// Through a remote with readiness callbacks, bytes arrive intact both ways and a
// half-close travels in both directions.
func TestTCPDrainerRelay(t *testing.T) {
	h := &drainHandler{}
	r := newRig(t, h)
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.9:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := make([]byte, 4<<20)
	rand.Read(want)
	go func() {
		c.Write(want)
		c.CloseWrite()
	}()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %d bytes, then %v", len(got), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo of %d bytes came back as %d different bytes", len(want), len(got))
	}
}

// A remote that fails resets the application's connection: no clean EOF.
func TestTCPDrainerFailureResets(t *testing.T) {
	h := &drainHandler{}
	r := newRig(t, h)
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.9:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.remotes[0].fail(errors.New("peer went away"))
	h.mu.Unlock()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.Read(b)
	if err == nil || err == io.EOF || !errors.Is(err, syscall.ECONNRESET) && !isReset(err) {
		t.Fatalf("read after the remote failed = %v, want a reset", err)
	}
}

func isReset(err error) bool {
	return err != nil && bytes.Contains([]byte(err.Error()), []byte("reset"))
}

// Idle flows whose remote has readiness callbacks hold no goroutine in the stack.
func TestTCPIdleFlowsHoldNoGoroutine(t *testing.T) {
	const flows = 200
	h := &drainHandler{}
	r := newRig(t, h)
	settle := func() int {
		time.Sleep(50 * time.Millisecond)
		return runtime.NumGoroutine()
	}
	before := settle()
	conns := make([]net.Conn, flows)
	for i := range conns {
		c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.AddrPortFrom(netip.MustParseAddr("198.51.100.9"), uint16(1000+i)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte{byte(i)})
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil || b[0] != byte(i) {
			t.Fatalf("flow %d: echo %v, %v", i, b, err)
		}
		conns[i] = c
	}
	var extra int
	for deadline := time.Now().Add(5 * time.Second); ; {
		extra = settle() - before
		if extra <= flows/10 || time.Now().After(deadline) {
			break
		}
	}
	if extra > flows/10 {
		t.Fatalf("%d idle flows hold %d goroutines", flows, extra)
	}
	if got := r.st.Stats().TCPActive; got != flows {
		t.Fatalf("TCPActive = %d, want %d", got, flows)
	}
	// Closing them ends every flow.
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.st.Stats().TCPActive != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("TCPActive = %d after the applications closed", r.st.Stats().TCPActive)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A flow the application half-closed while the remote keeps its side open does not
// hold Stack.Close until the remote ends: the endpoint's death aborts the remote.
func TestCloseDoesNotWaitForHalfClosedFlows(t *testing.T) {
	h := &drainHandler{holdOpen: true}
	r := newRig(t, h)
	c, err := r.app.DialContextTCPAddrPort(ctx5(t), netip.MustParseAddrPort("198.51.100.9:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CloseWrite()
	var remote *echoDrainer
	for deadline := time.Now().Add(5 * time.Second); ; {
		h.mu.Lock()
		if len(h.remotes) == 1 {
			remote = h.remotes[0]
		}
		h.mu.Unlock()
		if remote != nil {
			remote.mu.Lock()
			half := remote.halfClosed
			remote.mu.Unlock()
			if half {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the application's FIN did not reach the remote")
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := make(chan struct{})
	go func() { r.st.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Stack.Close waits for a half-closed flow's remote")
	}
	remote.mu.Lock()
	err = remote.err
	remote.mu.Unlock()
	if err == nil {
		t.Fatal("the remote of a flow cut by Close was not aborted")
	}
}
