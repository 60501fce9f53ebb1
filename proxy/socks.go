package proxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// SOCKS5 constants (RFC 1928, RFC 1929).
const (
	socksVersion = 0x05
	authVersion  = 0x01

	methodNone     = 0x00
	methodPassword = 0x02
	methodNoAccept = 0xff

	cmdConnect   = 0x01
	cmdBind      = 0x02
	cmdAssociate = 0x03

	atypIPv4   = 0x01
	atypDomain = 0x03
	atypIPv6   = 0x04

	repSucceeded          = 0x00
	repGeneralFailure     = 0x01
	repNotAllowed         = 0x02
	repNetUnreachable     = 0x03
	repHostUnreachable    = 0x04
	repRefused            = 0x05
	repTTLExpired         = 0x06 // used for timeouts
	repCmdNotSupported    = 0x07
	repAddrTypeNotSupport = 0x08
)

// socksError is a failed request answered with rep.
type socksError struct {
	rep byte
	err error
}

func (e *socksError) Error() string { return fmt.Sprintf("socks: reply 0x%02x: %v", e.rep, e.err) }
func (e *socksError) Unwrap() error { return e.err }

// serveSOCKS runs one SOCKS5 connection.
func (s *Server) serveSOCKS(ctx context.Context, c net.Conn, br *bufio.Reader, log *zap.Logger) error {
	if err := s.socksNegotiate(c, br); err != nil {
		return err
	}
	cmd, dst, err := readSOCKSRequest(br)
	if err != nil {
		var se *socksError
		if errors.As(err, &se) {
			writeSOCKSReply(c, se.rep, netip.AddrPort{})
		}
		return err
	}
	switch cmd {
	case cmdConnect:
		up, log, err := s.open(ctx, c, dst, log)
		if err != nil {
			rep := socksReplyCode(err)
			log.Debug("socks connect failed", zap.Stringer("dst", dst), zap.Error(err))
			writeSOCKSReply(c, rep, netip.AddrPort{})
			return err
		}
		// The bound address is the peer's socket, which the session does not tell:
		// 0.0.0.0:0, as clients accept.
		if err := writeSOCKSReply(c, repSucceeded, netip.AddrPort{}); err != nil {
			up.Close()
			return err
		}
		_ = c.SetReadDeadline(time.Time{})
		relay(c, br, up, log)
		return nil
	case cmdAssociate:
		return s.socksAssociate(ctx, c, br, log)
	default: // BIND and unknown commands
		writeSOCKSReply(c, repCmdNotSupported, netip.AddrPort{})
		return fmt.Errorf("socks: command 0x%02x not supported", cmd)
	}
}

// socksNegotiate reads the greeting, picks a method and runs RFC 1929 when needed.
func (s *Server) socksNegotiate(c net.Conn, br *bufio.Reader) error {
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("socks: greeting: %w", err)
	}
	if hdr[0] != socksVersion {
		return fmt.Errorf("socks: version %d", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(br, methods); err != nil {
		return fmt.Errorf("socks: greeting: %w", err)
	}
	want := byte(methodNone)
	if s.Auth != nil {
		want = methodPassword
	}
	found := false
	for _, m := range methods {
		found = found || m == want
	}
	if !found {
		c.Write([]byte{socksVersion, methodNoAccept})
		return errors.New("socks: no acceptable authentication method")
	}
	if _, err := c.Write([]byte{socksVersion, want}); err != nil {
		return err
	}
	if want == methodNone {
		return nil
	}
	// RFC 1929: VER ULEN UNAME PLEN PASSWD.
	var v [2]byte
	if _, err := io.ReadFull(br, v[:]); err != nil {
		return fmt.Errorf("socks: auth: %w", err)
	}
	user := make([]byte, v[1])
	if _, err := io.ReadFull(br, user); err != nil {
		return fmt.Errorf("socks: auth: %w", err)
	}
	plen, err := br.ReadByte()
	if err != nil {
		return fmt.Errorf("socks: auth: %w", err)
	}
	pass := make([]byte, plen)
	if _, err := io.ReadFull(br, pass); err != nil {
		return fmt.Errorf("socks: auth: %w", err)
	}
	if v[0] != authVersion || !s.Auth.match(string(user), string(pass)) {
		c.Write([]byte{authVersion, 0x01})
		return errors.New("socks: authentication failed")
	}
	_, err = c.Write([]byte{authVersion, 0x00})
	return err
}

// readSOCKSRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT. Errors that deserve a
// reply are *socksError.
func readSOCKSRequest(br *bufio.Reader) (byte, wire.Addr, error) {
	var hdr [3]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return 0, wire.Addr{}, fmt.Errorf("socks: request: %w", err)
	}
	if hdr[0] != socksVersion {
		return 0, wire.Addr{}, &socksError{repGeneralFailure, fmt.Errorf("request version %d", hdr[0])}
	}
	a, err := readSOCKSAddr(br)
	if err != nil {
		return 0, wire.Addr{}, err
	}
	return hdr[1], a, nil
}

// readSOCKSAddr reads ATYP ADDR PORT.
func readSOCKSAddr(r io.Reader) (wire.Addr, error) {
	var t [1]byte
	if _, err := io.ReadFull(r, t[:]); err != nil {
		return wire.Addr{}, err
	}
	var a wire.Addr
	switch t[0] {
	case atypIPv4:
		var b [6]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return a, err
		}
		a.IP = netip.AddrFrom4([4]byte(b[:4]))
		a.Port = binary.BigEndian.Uint16(b[4:])
	case atypIPv6:
		var b [18]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return a, err
		}
		a.IP = netip.AddrFrom16([16]byte(b[:16])).Unmap()
		a.Port = binary.BigEndian.Uint16(b[16:])
	case atypDomain:
		var l [1]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return a, err
		}
		b := make([]byte, int(l[0])+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return a, err
		}
		name := string(b[:l[0]])
		a.Port = binary.BigEndian.Uint16(b[l[0]:])
		if ip, err := netip.ParseAddr(name); err == nil {
			if ip.Zone() != "" {
				// A zone means an interface of this machine; it cannot cross the wire.
				return a, &socksError{repHostUnreachable, fmt.Errorf("%w %q: an IPv6 zone is not a destination", wire.ErrBadName, name)}
			}
			a.IP = ip.Unmap()
		} else if !wire.ValidName(name) {
			return a, &socksError{repHostUnreachable, fmt.Errorf("%w %q", wire.ErrBadName, name)}
		} else {
			a.Name = name
		}
	default:
		return a, &socksError{repAddrTypeNotSupport, fmt.Errorf("address type 0x%02x", t[0])}
	}
	return a, nil
}

// appendSOCKSAddr appends ATYP ADDR PORT.
func appendSOCKSAddr(b []byte, a wire.Addr) []byte {
	switch {
	case a.IP.Is4():
		b = append(b, atypIPv4)
		b = append(b, a.IP.AsSlice()...)
	case a.IP.IsValid():
		b = append(b, atypIPv6)
		b = append(b, a.IP.AsSlice()...)
	default:
		b = append(b, atypDomain, byte(len(a.Name)))
		b = append(b, a.Name...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port)
}

// writeSOCKSReply writes VER REP RSV BND.ADDR BND.PORT; an invalid bound address is
// sent as 0.0.0.0:0.
func writeSOCKSReply(c net.Conn, rep byte, bound netip.AddrPort) error {
	if !bound.IsValid() {
		bound = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	b := appendSOCKSAddr([]byte{socksVersion, rep, 0}, wire.AddrFromAddrPort(bound))
	_, err := c.Write(b)
	return err
}

// socksReplyCode maps an open error to a SOCKS5 reply code. Timeouts get 0x06 (TTL
// expired), the code curl and most clients report as a timeout.
func socksReplyCode(err error) byte {
	var se *transport.StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case wire.CodeRefused:
			return repRefused
		case wire.CodeNetUnreachable:
			return repNetUnreachable
		case wire.CodeHostUnreach, wire.CodeHostNotFound:
			return repHostUnreachable
		case wire.CodeDenied:
			return repNotAllowed
		case wire.CodeTimedOut:
			return repTTLExpired
		}
		return repGeneralFailure
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return repRefused
	case errors.Is(err, syscall.ENETUNREACH):
		return repNetUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH):
		return repHostUnreachable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return repTTLExpired
	}
	return repGeneralFailure
}

// socksAssociate serves UDP ASSOCIATE: a relay socket on the control connection's
// local IP; the association lives until the control connection closes. The transport
// association is opened on the first datagram (its destination is the one the peer
// checks), so one UDP ASSOCIATE is one association.
func (s *Server) socksAssociate(ctx context.Context, c net.Conn, br *bufio.Reader, log *zap.Logger) error {
	local, _ := netip.ParseAddrPort(c.LocalAddr().String())
	clientIP, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr().Unmap(), 0)))
	if err != nil {
		writeSOCKSReply(c, repGeneralFailure, netip.AddrPort{})
		return err
	}
	defer pc.Close()
	bound := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := writeSOCKSReply(c, repSucceeded, bound); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { pc.Close(); c.Close() })
	defer stop()

	u := &udpRelay{s: s, pc: pc, clientIP: clientIP.Addr().Unmap(), clientAddr: c.RemoteAddr().String(), log: log}
	defer u.close()
	wg.Go(func() {
		defer cancel()
		u.fromClient(ctx, &wg)
	})
	// The control connection carries nothing more; its end ends the association.
	_, _ = io.Copy(io.Discard, br)
	cancel()
	return nil
}

// udpRelay is the state of one UDP ASSOCIATE.
type udpRelay struct {
	s          *Server
	pc         *net.UDPConn
	clientIP   netip.Addr
	clientAddr string // the control connection's remote address, for the flow table
	log        *zap.Logger

	mu     sync.Mutex
	assoc  *transport.Association
	flow   *flowtab.Flow
	client netip.AddrPort // where replies go: the source of the client's datagrams
}

func (u *udpRelay) close() {
	u.mu.Lock()
	a, f := u.assoc, u.flow
	u.mu.Unlock()
	if a != nil {
		a.Close()
	}
	if f != nil {
		f.Close()
		out, in := f.Bytes()
		u.log.Debug("udp flow closed", zap.Uint64("flow", f.ID()), zap.Uint64("bytes_out", out), zap.Uint64("bytes_in", in), zap.Duration("age", f.Age()))
	}
}

// fromClient reads datagrams from the client and sends them on the association,
// opening it on the first one and starting toClient.
func (u *udpRelay) fromClient(ctx context.Context, wg *sync.WaitGroup) {
	buf := make([]byte, 64<<10)
	for ctx.Err() == nil {
		n, from, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if from.Addr().Unmap() != u.clientIP {
			continue // only the client that asked may use the relay
		}
		p := buf[:n]
		if len(p) < 4 || p[0] != 0 || p[1] != 0 || p[2] != 0 {
			continue // short, or a fragment: dropped
		}
		r := bytesReader{b: p[3:]}
		dst, err := readSOCKSAddr(&r)
		if err != nil {
			continue
		}
		u.mu.Lock()
		u.client = from
		a, f := u.assoc, u.flow
		u.mu.Unlock()
		if a == nil {
			f = u.s.table().StartNamed("udp", u.clientAddr, dst.String())
			octx, cancel := context.WithTimeout(ctx, 30*time.Second)
			sess, err := u.s.Session(octx)
			if err == nil {
				a, err = sess.OpenUDP(octx, dst)
			}
			cancel()
			if err != nil {
				u.log.Debug("udp associate: open failed", zap.Uint64("flow", f.ID()), zap.Stringer("dst", dst), zap.Error(err))
				return
			}
			u.s.udpTotal.Add(1)
			f.Open()
			u.log.Debug("udp flow open", zap.Uint64("flow", f.ID()), zap.Stringer("dst", dst), zap.Uint32("association", a.ID()))
			u.mu.Lock()
			u.assoc, u.flow = a, f
			u.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			wg.Go(func() { u.toClient(ctx, a, f) })
		}
		if err := a.WriteToAddr(r.b, dst); err != nil {
			return
		}
		f.AddOut(len(r.b))
	}
}

// toClient sends the association's datagrams to the client with a SOCKS UDP header.
func (u *udpRelay) toClient(ctx context.Context, a *transport.Association, f *flowtab.Flow) {
	stop := context.AfterFunc(ctx, func() { a.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	out := make([]byte, 0, 64<<10+262)
	for {
		n, from, err := a.ReadFromAddr(buf)
		if err != nil {
			return
		}
		out = appendSOCKSAddr(append(out[:0], 0, 0, 0), from)
		out = append(out, buf[:n]...)
		u.mu.Lock()
		to := u.client
		u.mu.Unlock()
		if _, err := u.pc.WriteToUDPAddrPort(out, to); err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		f.AddIn(n)
	}
}

// bytesReader is a minimal io.Reader over b that leaves the unread rest in b.
type bytesReader struct{ b []byte }

func (r *bytesReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
