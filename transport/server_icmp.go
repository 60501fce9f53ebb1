package transport

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"time"

	"go.uber.org/zap"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/tetherd/tetherd/transport/wire"
)

// serveICMP runs an ICMP echo association: every DGRAM from the client is an echo body
// (identifier u16, sequence u16, data) sent as a real echo request through an
// unprivileged ICMP socket; every echo reply comes back the same way. The peer never
// answers for a host itself. Without such a socket (Linux: the user's group is outside
// net.ipv4.ping_group_range) the OPEN is refused with UNSUPPORTED.
func (srv *Server) serveICMP(s *session, a *Association, refuse func(*StreamError)) {
	if !a.dst.IP.IsValid() {
		refuse(&StreamError{Code: wire.CodeUnsupported, Reason: "ICMP echo needs an IP destination"})
		return
	}
	if err := srv.Policy.Check(a.dst.IP, 1); err != nil {
		refuse(asStreamError(err))
		return
	}
	network, laddr, proto := "udp4", "0.0.0.0", 1
	if a.dst.IP.Is6() {
		network, laddr, proto = "udp6", "::", 58
	}
	c, err := icmp.ListenPacket(network, laddr)
	if err != nil {
		reason := "cannot open an unprivileged ICMP socket on the peer: " + err.Error()
		if errors.Is(err, os.ErrPermission) {
			reason = "the peer may not send pings: its user is outside net.ipv4.ping_group_range"
		}
		refuse(&StreamError{Code: wire.CodeUnsupported, Reason: reason})
		return
	}
	s.openDone(a.dst) // the slot is free before the client hears
	s.reply(a.sid, wire.Reply{Code: wire.CodeOK, Addr: wire.Addr{IP: a.dst.IP}})
	log := s.log.With(zap.Uint32("stream", a.sid), zap.String("dst", a.dst.String()))

	done := make(chan struct{})
	go func() { // replies → client
		defer close(done)
		defer a.Close()
		buf := make([]byte, 64<<10)
		for {
			_ = c.SetReadDeadline(time.Now().Add(srv.udpIdleTimeout()))
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			m, err := icmp.ParseMessage(proto, buf[:n])
			if err != nil {
				continue
			}
			echo, ok := m.Body.(*icmp.Echo)
			if !ok || (m.Type != ipv4.ICMPTypeEchoReply && m.Type != ipv6.ICMPTypeEchoReply) {
				continue
			}
			ua, ok := from.(*net.UDPAddr)
			if !ok {
				continue
			}
			ip, _ := netip.AddrFromSlice(ua.IP)
			body := make([]byte, 4+len(echo.Data))
			binary.BigEndian.PutUint16(body[2:], uint16(echo.Seq))
			copy(body[4:], echo.Data)
			if a.WriteToAddr(body, wire.Addr{IP: ip.Unmap()}) != nil {
				return
			}
		}
	}()
	buf := make([]byte, 64<<10)
	for {
		n, to, err := a.ReadFromAddr(buf)
		if err != nil {
			break
		}
		if n < 4 || !to.IP.IsValid() || srv.Policy.Check(to.IP, 1) != nil || to.IP.Is6() != a.dst.IP.Is6() {
			s.dgramsDropped.Add(1)
			continue
		}
		typ := icmp.Type(ipv4.ICMPTypeEcho)
		if to.IP.Is6() {
			typ = ipv6.ICMPTypeEchoRequest
		}
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{
			ID:   int(binary.BigEndian.Uint16(buf)), // the kernel replaces it with the socket's
			Seq:  int(binary.BigEndian.Uint16(buf[2:])),
			Data: append([]byte(nil), buf[4:n]...),
		}}
		b, err := msg.Marshal(nil) // ICMPv6: the kernel fills in the checksum
		if err != nil {
			continue
		}
		if _, err := c.WriteTo(b, &net.UDPAddr{IP: to.IP.AsSlice()}); err != nil {
			log.Debug("ping", zap.Error(err))
			s.dgramsDropped.Add(1)
		}
	}
	c.Close()
	<-done
}
