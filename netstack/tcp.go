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
)

// handleTCP runs for every new SYN (gVisor's forwarder starts it in a goroutine of its
// own and limits how many run at once). The destination is dialed first; only when
// that worked does the application's handshake complete.
func (s *Stack) handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	src := netip.AddrPortFrom(addrFrom(id.RemoteAddress), id.RemotePort)
	dst := netip.AddrPortFrom(addrFrom(id.LocalAddress), id.LocalPort)
	f := s.flows.Start("tcp", src, dst)
	log := s.log.With(zap.Uint64("flow", f.ID()))
	ctx, cancel := context.WithTimeout(flowtab.WithID(s.ctx, f.ID()), s.opts.DialTimeout)
	conn, err := s.handler.DialTCP(ctx, src, dst)
	cancel()
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
	local := gonet.NewTCPConn(&wq, ep)
	f.Open()
	log.Debug("tcp flow open", zap.Stringer("src", src), zap.Stringer("dst", dst))
	if !s.goFlow(func() { s.relayTCP(local, ep, &wq, conn, f, log) }) {
		f.Close()
		ep.Abort()
		abortConn(conn)
	}
}

// relayTCP copies both ways until both directions finished: a FIN is passed on as a
// half-close, a reset as a reset.
func (s *Stack) relayTCP(local *gonet.TCPConn, ep tcpip.Endpoint, wq *waiter.Queue, remote net.Conn, f *flowtab.Flow, log *zap.Logger) {
	s.tcpActive.Add(1)
	defer s.tcpActive.Add(-1)
	defer f.Close()
	var wg sync.WaitGroup
	var downErr error
	wg.Add(1)
	go func() { // remote → application
		defer wg.Done()
		// Counting on the writer side keeps remote's WriteTo, when it has one.
		_, downErr = io.Copy(flowtab.Writer{W: local, Add: f.AddIn}, remote)
		if downErr == nil {
			_ = local.CloseWrite()
			return
		}
		ep.Abort() // RST to the application: truncation must not look like success
	}()
	upErr := copyFromEndpoint(flowtab.Writer{W: remote, Add: f.AddOut}, ep, wq)
	if upErr == nil {
		if cw, ok := remote.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	} else {
		abortConn(remote)
	}
	wg.Wait()
	_ = local.Close()
	_ = remote.Close()
	if log.Core().Enabled(zap.DebugLevel) {
		out, in := f.Bytes()
		fields := []zap.Field{zap.Uint64("bytes_out", out), zap.Uint64("bytes_in", in), zap.Duration("age", f.Age())}
		if upErr != nil {
			fields = append(fields, zap.NamedError("out_error", upErr))
		}
		if downErr != nil {
			fields = append(fields, zap.NamedError("in_error", downErr))
		}
		log.Debug("tcp flow closed", fields...)
	}
}

// abortConn resets conn if it can, else closes it.
func abortConn(c net.Conn) {
	if a, ok := c.(interface{ Abort() }); ok {
		a.Abort()
	}
	_ = c.Close()
}

// copyFromEndpoint copies what the application sends into w until it half-closes
// (nil) or the connection fails. It reads straight from the endpoint's receive queue
// into w when the endpoint says it is readable: an idle flow holds no buffer, and
// bytes are copied once (into the stream's frame) instead of twice.
func copyFromEndpoint(w io.Writer, ep tcpip.Endpoint, wq *waiter.Queue) error {
	entry, readable := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	for {
		res, err := ep.Read(w, tcpip.ReadOptions{})
		if res.Count > 0 {
			ep.ModerateRecvBuf(res.Count) // receive-buffer auto-tuning, as gonet does
		}
		switch err.(type) {
		case nil:
		case *tcpip.ErrWouldBlock:
			<-readable // also signalled when the endpoint is closed or reset
		case *tcpip.ErrClosedForReceive:
			return nil
		default:
			return tcpipError{err}
		}
	}
}
