package transport

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/ipv4"

	"github.com/tetherd/tetherd/transport/wire"
)

func (srv *Server) udpIdleTimeout() time.Duration {
	if srv.UDPIdleTimeout > 0 {
		return srv.UDPIdleTimeout
	}
	return 2 * time.Minute
}

// serveAssoc runs a UDP association: one socket on the peer for the association, so
// replies from any remote come back (endpoint-independent mapping).
func (srv *Server) serveAssoc(s *session, a *Association) {
	log := s.log.With(zap.Uint32("stream", a.sid), zap.String("dst", a.dst.String()))
	refuse := func(se *StreamError) {
		log.Info("refused stream", zap.Stringer("proto", a.proto), zap.Stringer("code", se.Code), zap.String("reason", se.Reason))
		a.fail(se)
		s.openDone(a.dst) // the slot is free before the client hears
		s.reply(a.sid, wire.Reply{Code: se.Code, Reason: se.Reason})
		a.removeFromTable()
	}
	if a.proto == wire.ProtoICMP {
		srv.serveICMP(s, a, refuse)
		return
	}
	var resolvers []netip.AddrPort
	if isResolver(a.dst) {
		if resolvers = srv.resolverAddrs(); len(resolvers) == 0 {
			refuse(&StreamError{Code: wire.CodeHostNotFound, Reason: "the peer knows no DNS resolver (set serve.dns_servers)"})
			return
		}
	} else if !a.dst.IP.IsUnspecified() || a.dst.Port != 0 {
		// Check the first destination now, so a denied one is refused at open time.
		ctx, cancel := context.WithTimeout(s.life, srv.dialTimeout())
		_, err := srv.resolve(ctx, a.dst)
		cancel()
		if err != nil {
			refuse(asStreamError(err))
			return
		}
	}
	listen := srv.ListenPacket
	if listen == nil {
		var lc net.ListenConfig
		listen = lc.ListenPacket
	}
	network, laddr := "udp", ":0"
	if a.dst.IP.Is4() || (len(resolvers) > 0 && resolvers[0].Addr().Is4()) {
		network, laddr = "udp4", "0.0.0.0:0"
	}
	pc, err := listen(s.life, network, laddr)
	if err != nil && network == "udp" {
		pc, err = listen(s.life, "udp4", "0.0.0.0:0") // no IPv6 on this peer
	}
	if err != nil {
		refuse(asStreamError(err))
		return
	}
	var local wire.Addr
	if ua, ok := pc.LocalAddr().(*net.UDPAddr); ok {
		local = wire.AddrFromAddrPort(ua.AddrPort())
	}
	s.openDone(a.dst) // the slot is free before the client hears
	s.reply(a.sid, wire.Reply{Code: wire.CodeOK, Addr: local})

	var last sync.Mutex
	lastActive := time.Now()
	touch := func() {
		last.Lock()
		lastActive = time.Now()
		last.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	// open tells, after a read failed with err, whether the association stays open:
	// a read deadline that passed while the client was still sending.
	open := func(err error) bool {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return false
		}
		last.Lock()
		idle := time.Since(lastActive)
		last.Unlock()
		if idle < srv.udpIdleTimeout() {
			return true
		}
		log.Debug("association idle; closing")
		return false
	}
	source := func(ua *net.UDPAddr) wire.Addr {
		if len(resolvers) > 0 {
			return wire.Addr{Name: wire.ResolverName, Port: 53}
		}
		return wire.AddrFromAddrPort(ua.AddrPort())
	}
	go func() { // socket → client
		defer wg.Done()
		defer a.Close()
		if uc, ok := pc.(*net.UDPConn); ok {
			if br, err := newBatchReader(uc, network == "udp4"); err == nil {
				forward := func(p []byte, from *net.UDPAddr) error {
					touch()
					return a.WriteToAddr(p, source(from))
				}
				for {
					_ = pc.SetReadDeadline(time.Now().Add(srv.udpIdleTimeout()))
					if err := br.read(forward); err != nil && !open(err) {
						return
					}
				}
			}
		}
		buf := make([]byte, maxDatagram)
		for {
			_ = pc.SetReadDeadline(time.Now().Add(srv.udpIdleTimeout()))
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				if open(err) {
					continue
				}
				return
			}
			touch()
			ua, ok := from.(*net.UDPAddr)
			if !ok {
				continue
			}
			if a.WriteToAddr(buf[:n], source(ua)) != nil {
				return
			}
		}
	}()
	go func() { // client → socket
		defer wg.Done()
		defer pc.Close()
		if uc, ok := pc.(*net.UDPConn); ok && len(resolvers) == 0 && network == "udp4" {
			srv.sendBatches(s, a, uc, touch)
			return
		}
		send := func(p []byte, to wire.Addr) {
			var err error
			if len(resolvers) > 0 {
				if isResolver(to) {
					_, err = pc.WriteTo(p, net.UDPAddrFromAddrPort(resolvers[0]))
				}
				if err != nil || !isResolver(to) {
					s.dgramsDropped.Add(1) // a resolver association carries DNS to the resolver only
				}
				return
			}
			ips, err := srv.datagramDst(s.life, to)
			if err != nil {
				s.dgramsDropped.Add(1)
				return
			}
			if _, err := pc.WriteTo(p, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0], to.Port))); err != nil {
				s.dgramsDropped.Add(1)
			}
		}
		for {
			// No buffer is held while the client is silent.
			if err := a.WaitRead(); err != nil {
				return
			}
			bp := getBuf(maxDatagram)
			n, to, err := a.ReadFromAddr(*bp)
			if err == nil {
				touch()
				send((*bp)[:n], to)
			}
			putBuf(bp)
			if err != nil {
				return
			}
		}
	}()
	wg.Wait()
}

// datagramDst resolves and policy-checks a datagram's destination. IP destinations
// cost a policy check and nothing else.
func (srv *Server) datagramDst(ctx context.Context, to wire.Addr) ([]netip.Addr, error) {
	if to.IP.IsValid() {
		if err := srv.Policy.Check(to.IP, to.Port); err != nil {
			return nil, err
		}
		return []netip.Addr{to.IP.Unmap()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, srv.dialTimeout())
	defer cancel()
	return srv.resolve(ctx, to)
}

// sendBatch is how many datagrams sendBatches hands the kernel in one system call.
const sendBatch = 32

// sendBatches sends the association's datagrams from the client on an IPv4 socket,
// as many as are waiting (up to sendBatch) in one sendmmsg: a datagram costs a system
// call otherwise, and on a flood the system calls are most of the peer's CPU
// (docs/performance-changes.md, change 23). It returns when the association ends.
func (srv *Server) sendBatches(s *session, a *Association, uc *net.UDPConn, touch func()) {
	bc := ipv4.NewPacketConn(uc)
	var (
		taken [sendBatch]dgram
		addrs [sendBatch]net.UDPAddr
		ip4s  [sendBatch][4]byte
		bufs  [sendBatch][1][]byte
		msgs  = make([]ipv4.Message, 0, sendBatch)
	)
	for {
		if err := a.WaitRead(); err != nil {
			return
		}
		n := a.takeQueued(taken[:])
		if n == 0 {
			continue
		}
		touch()
		closed := false
		msgs = msgs[:0]
		for i := range n {
			d := taken[i]
			ips, err := srv.datagramDst(s.life, d.addr)
			ip := netip.Addr{}
			if err == nil {
				if i := slices.IndexFunc(ips, netip.Addr.Is4); i >= 0 {
					ip = ips[i] // a name's IPv4 address: this socket has no other family
				}
			}
			if !ip.IsValid() {
				s.dgramsDropped.Add(1) // denied, unresolvable, or IPv6 only
				continue
			}
			ip4s[i] = ip.As4()
			addrs[i] = net.UDPAddr{IP: ip4s[i][:], Port: int(d.addr.Port)}
			bufs[i][0] = *d.buf
			msgs = append(msgs, ipv4.Message{Buffers: bufs[i][:], Addr: &addrs[i]})
		}
		for len(msgs) > 0 {
			sent, err := bc.WriteBatch(msgs, 0)
			sent = max(sent, 0) // -1 with the error
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					closed = true
					break
				}
				// sendmmsg stops at the first message it cannot send and reports its
				// error: that datagram is dropped, as WriteTo would have, and the rest go.
				sent++
				s.dgramsDropped.Add(1)
			}
			msgs = msgs[min(sent, len(msgs)):]
		}
		for i := range n {
			putBuf(taken[i].buf)
			taken[i] = dgram{}
			bufs[i][0] = nil
		}
		if closed {
			return
		}
	}
}
