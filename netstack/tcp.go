package netstack

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/internal/pump"
)

// handleTCP runs for every new SYN (gVisor's forwarder starts it in a goroutine of its
// own and limits how many run at once). The destination is dialed first; only when
// that worked does the application's handshake complete.
func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort)
	if !s.enterDial(dst.Addr()) {
		// Half the dial slots are taken and this host holds its share: drop the
		// SYN, as a full backlog would. The application retransmits it.
		s.syns.take(flowKey{src, dst})
		s.tcpDeferred.Add(1)
		r.Complete(false)
		return
	}
	f := s.flows.Start("tcp", src, dst)
	log := s.log.With(zap.Uint64("flow", f.ID()))
	ctx, cancel := context.WithTimeout(flowtab.WithID(s.ctx, f.ID()), s.opts.DialTimeout)
	conn, err := s.handler.DialTCP(ctx, src, dst)
	cancel()
	s.leaveDial(dst.Addr())
	seq, haveSeq := s.syns.take(flowKey{src, dst})
	if err != nil {
		s.tcpRefused.Add(1)
		log.Debug("tcp dial failed", zap.Stringer("src", src), zap.Stringer("dst", dst), zap.Error(err))
		if kind := kindOf(err); kind != rst && haveSeq && s.sendUnreachable(flowKey{src, dst}, seq, kind) == nil {
			r.Complete(false) // the ICMP error ends the application's connect
			return
		}
		r.Complete(true) // RST: the application sees ECONNREFUSED at once
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		// The application gave up meanwhile (or the stack is closing).
		r.Complete(true)
		abortConn(conn)
		log.Debug("tcp flow abandoned by the application", zap.Stringer("src", src), zap.Stringer("dst", dst))
		return
	}
	r.Complete(false)
	s.tcpTotal.Add(1)
	f.Open()
	log.Debug("tcp flow open", zap.Stringer("src", src), zap.Stringer("dst", dst))
	if !s.addFlow() {
		f.Close()
		ep.Abort()
		abortConn(conn)
		return
	}
	s.tcpActive.Add(1)
	fl := &tcpFlow{s: s, local: gonet.NewTCPConn(&wq, ep), ep: ep, wq: &wq, remote: conn, f: f, log: log, left: 2}
	fl.start()
}

// enterDial counts a dial to dst, unless half of MaxInFlight are in progress and
// dst holds MaxInFlightPerHost of them (gVisor's forwarder enforces MaxInFlight).
func (s *Stack) enterDial(dst netip.Addr) bool {
	s.dialsMu.Lock()
	defer s.dialsMu.Unlock()
	if s.dials.Crowded(dst, s.opts.MaxInFlight, s.opts.MaxInFlightPerHost) {
		return false
	}
	s.dials.Take(dst)
	return true
}

// leaveDial ends a dial that enterDial counted.
func (s *Stack) leaveDial(dst netip.Addr) {
	s.dialsMu.Lock()
	s.dials.Release(dst)
	s.dialsMu.Unlock()
}

// Drainer is implemented by connections a Handler's DialTCP may return that can tell
// when they have something to read (transport.Stream does). With one, the relay holds
// no goroutine while the flow is idle in either direction.
type Drainer interface {
	// OnReadable sets a callback, which must not block, for whenever DrainTo may
	// make progress; nil removes it.
	OnReadable(f func())
	// DrainTo writes what is ready to w without waiting: nil when it wrote it all
	// and the connection goes on, io.EOF after the other side's FIN, or an error.
	DrainTo(w io.Writer) (int64, error)
}

// tcpFlow relays one TCP flow both ways until both directions finished: a FIN is
// passed on as a half-close, a reset as a reset. Each direction is a pump (see
// internal/pump) that runs only while there are bytes to move: the application's
// side is kicked by gVisor's waiter queue, the remote's by its OnReadable callback
// (remotes without one get a goroutine of their own for that direction). An idle
// flow thus costs its gVisor endpoint and a few small structures, no goroutine stack.
type tcpFlow struct {
	s      *Stack
	local  *gonet.TCPConn // the application's side, for writing
	ep     tcpip.Endpoint // the same, for reading straight from its receive queue
	wq     *waiter.Queue
	remote net.Conn
	f      *flowtab.Flow
	log    *zap.Logger
	entry  waiter.Entry // kicks the upstream pump when the application sent something

	mu             sync.Mutex
	left           int // directions not finished
	upErr, downErr error
}

func (fl *tcpFlow) start() {
	up := pump.New(fl.pumpUp, fl.finishOne)
	fl.entry = waiter.NewFunctionEntry(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, func(m waiter.EventMask) {
		up.Kick()
		if m&(waiter.EventHUp|waiter.EventErr) != 0 && up.Finished() {
			// The endpoint died (the application reset it, or the stack is
			// closing) after the application's half-close: the upstream pump,
			// done, will not see it, and the downstream one would wait for the
			// remote. Abort the remote: that ends the downstream pump too.
			abortConn(fl.remote)
		}
	})
	fl.wq.EventRegister(&fl.entry)
	var down *pump.Pump
	if d, ok := fl.remote.(Drainer); ok {
		down = pump.New(func() bool { return fl.pumpDown(d) }, fl.finishOne)
		d.OnReadable(down.Kick)
	} else {
		// One pass that blocks until the end: a goroutine for the flow's life.
		down = pump.New(fl.copyDown, fl.finishOne)
	}
	up.Kick() // what arrived before the entry was registered
	down.Kick()
}

// pumpUp moves what the application sent to the remote. It returns true once the
// application half-closed (remote half-closed too) or the connection failed (remote
// aborted).
//
// It reads the endpoint's receive queue into a pooled buffer, up to 64 KiB at a
// time, and writes that to the remote in one call: one large frame per read rather
// than one per packet, and no gVisor lock held while the remote's Write waits for
// flow-control credit. The buffer goes back to the pool when the pump ends, so an
// idle flow holds none.
func (fl *tcpFlow) pumpUp() bool {
	bp := fl.s.tcpBufs.Get().(*[]byte)
	defer fl.s.tcpBufs.Put(bp)
	for {
		w := tcpip.SliceWriter(*bp)
		res, terr := fl.ep.Read(&w, tcpip.ReadOptions{})
		if res.Count > 0 {
			fl.ep.ModerateRecvBuf(res.Count) // receive-buffer auto-tuning, as gonet does
			n, werr := fl.remote.Write((*bp)[:res.Count])
			fl.f.AddOut(n)
			if werr != nil {
				// The application's bytes cannot be delivered: reset both sides.
				fl.ep.Abort()
				fl.endUp(werr)
				return true
			}
		}
		switch terr.(type) {
		case nil:
			continue
		case *tcpip.ErrWouldBlock:
			return false
		case *tcpip.ErrClosedForReceive:
			fl.endUp(nil)
		default:
			fl.endUp(tcpipError{terr})
		}
		return true
	}
}

// endUp passes the application's end on to the remote: its FIN as a half-close, a
// failure as an abort.
func (fl *tcpFlow) endUp(err error) {
	if err == nil {
		if cw, ok := fl.remote.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	} else {
		abortConn(fl.remote)
	}
	fl.mu.Lock()
	fl.upErr = err
	fl.mu.Unlock()
}

// pumpDown moves what the remote has ready to the application.
func (fl *tcpFlow) pumpDown(d Drainer) bool {
	_, err := d.DrainTo(flowtab.Writer{W: fl.local, Add: fl.f.AddIn})
	switch {
	case err == nil:
		return false
	case err == io.EOF:
		err = nil
	}
	fl.endDown(err)
	return true
}

// copyDown is pumpDown for remotes without readiness callbacks: it copies until the
// end.
func (fl *tcpFlow) copyDown() bool {
	// Counting on the writer side keeps remote's WriteTo, when it has one.
	_, err := io.Copy(flowtab.Writer{W: fl.local, Add: fl.f.AddIn}, fl.remote)
	fl.endDown(err)
	return true
}

// endDown passes the remote's end on to the application: a FIN, or a RST when the
// remote failed (truncation must not look like success).
func (fl *tcpFlow) endDown(err error) {
	if err == nil {
		_ = fl.local.CloseWrite()
	} else {
		fl.ep.Abort()
	}
	fl.mu.Lock()
	fl.downErr = err
	fl.mu.Unlock()
}

// finishOne runs when a direction finished; the second one closes the flow.
func (fl *tcpFlow) finishOne() {
	fl.mu.Lock()
	fl.left--
	last := fl.left == 0
	upErr, downErr := fl.upErr, fl.downErr
	fl.mu.Unlock()
	if !last {
		return
	}
	fl.wq.EventUnregister(&fl.entry)
	if d, ok := fl.remote.(Drainer); ok {
		d.OnReadable(nil)
	}
	_ = fl.local.Close()
	_ = fl.remote.Close()
	fl.f.Close()
	fl.s.tcpActive.Add(-1)
	if fl.log.Core().Enabled(zap.DebugLevel) {
		out, in := fl.f.Bytes()
		fields := []zap.Field{zap.Uint64("bytes_out", out), zap.Uint64("bytes_in", in), zap.Duration("age", fl.f.Age())}
		if upErr != nil {
			fields = append(fields, zap.NamedError("out_error", upErr))
		}
		if downErr != nil {
			fields = append(fields, zap.NamedError("in_error", downErr))
		}
		fl.log.Debug("tcp flow closed", fields...)
	}
	fl.s.wg.Done() // taken by addFlow
}

// abortConn resets conn if it can, else closes it.
func abortConn(c net.Conn) {
	if a, ok := c.(interface{ Abort() }); ok {
		a.Abort()
	}
	_ = c.Close()
}
