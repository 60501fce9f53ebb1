// Package netstack turns the IP packets of a TUN device into TCP and UDP flows with a
// gVisor userspace stack, and hands each flow to a Handler — in tetherd, a stream or
// association on the transport session.
//
// The pipeline: tun.Device → linkEndpoint (batched reads and writes) → gVisor (IPv4,
// IPv6, TCP, UDP; promiscuous and spoofing, so it accepts flows to any address) →
// forwarders. For TCP the Handler's dial happens before the application's handshake
// completes, so a refused destination is a refused connection, not connect-then-reset
// (tcp.go). UDP is handled per local source endpoint, with replies from any remote
// (udp.go). ICMP echo requests are consumed by a handler after reassembly, so gVisor
// never answers them itself as if every host on the internet were up (icmp.go).
//
// netstack does not import the transport: the daemon adapts one to the other.
package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/internal/slots"
)

// Handler connects flows to the world. A Handler that also implements Pinger carries
// ICMP echo.
type Handler interface {
	// DialTCP connects to dst on behalf of the local application at src. The
	// returned conn should implement CloseWrite() error (half-close) and may
	// implement Abort() (reset); when DialTCP fails, the application's SYN is
	// answered with a RST. DialTCP must honour ctx.
	DialTCP(ctx context.Context, src, dst netip.AddrPort) (net.Conn, error)
	// DialUDP opens an association for the local endpoint src; dst is its first
	// destination. Datagrams to other destinations go through the same
	// association, and replies may come from anywhere.
	DialUDP(ctx context.Context, src, dst netip.AddrPort) (PacketConn, error)
}

// PacketConn is a UDP association.
type PacketConn interface {
	WriteTo(p []byte, dst netip.AddrPort) error
	ReadFrom(p []byte) (n int, src netip.AddrPort, err error)
	Close() error
}

// ReadWaiter is a PacketConn that can wait for a datagram without a buffer: the
// stack then holds no receive buffer for an idle association.
type ReadWaiter interface {
	// WaitRead returns nil once ReadFrom would not block, or the error ReadFrom
	// would return.
	WaitRead() error
}

// Options configures a Stack. Zero fields take defaults.
type Options struct {
	// MTU of the device; default: dev.MTU().
	MTU int
	// MaxInFlight caps TCP dials in progress; more SYNs are dropped (and
	// retransmitted by the application). Default 512.
	MaxInFlight int
	// MaxInFlightPerHost is how many of those one destination address may hold
	// once half of them are taken; its further SYNs are dropped likewise. Dials to
	// a host that does not answer last until DialTimeout, long after the
	// application gave up on them; without this they could take every slot from
	// the hosts that do answer. Default 64, at most MaxInFlight.
	MaxInFlightPerHost int
	// DialTimeout bounds each dial. Default 15 s.
	DialTimeout time.Duration
	// UDPIdle ends an association with no traffic for this long (default 2 min);
	// DNSIdle is used instead when the first destination port is 53 (default 30 s).
	UDPIdle, DNSIdle time.Duration
	// MaxUDP bounds the association table; when it is full the association idle the
	// longest is evicted. Default 4096.
	MaxUDP int
	// Logger receives the stack's logs; nil discards them.
	Logger *zap.Logger
}

// Stats are the stack's counters.
type Stats struct {
	TCPActive, UDPActive         int
	TCPTotal, UDPTotal           uint64
	TCPRefused                   uint64 // dials that failed: answered with RST
	TCPDeferred                  uint64 // SYNs dropped while their host held its share of dials (MaxInFlightPerHost)
	UDPDropped                   uint64 // datagrams dropped (table full, association failed, queue full)
	EchoRequests, EchoUnanswered uint64
}

// Stack is a running netstack. Close releases everything it started.
type Stack struct {
	opts    Options
	log     *zap.Logger
	handler Handler
	dev     tun.Device
	link    *linkEndpoint
	ip      *stack.Stack

	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // flow goroutines

	udp udpTable
	// tcpBufs holds the 64 KiB buffers a TCP flow reads the application's bytes
	// into, taken only while the flow's upstream pump runs.
	tcpBufs sync.Pool
	pings   pingTable
	syns    synTable
	dialsMu sync.Mutex
	dials   slots.Table[netip.Addr] // TCP dials in progress, by destination
	flows   *flowtab.Table          // open TCP and UDP flows (flows.go)

	tcpActive                atomic.Int64
	tcpTotal, tcpRefused     atomic.Uint64
	tcpDeferred              atomic.Uint64
	udpTotal, udpDropped     atomic.Uint64
	echoReqs, echoUnanswered atomic.Uint64
}

const nicID = 1

// timeWait is how long gVisor's endpoint of a connection that it closed first stays
// in TIME_WAIT: a few of the local kernel's minimum retransmission timeouts (200 ms).
const timeWait = time.Second

// New starts a netstack on dev. The Stack owns dev from now on and closes it.
func New(dev tun.Device, h Handler, opts Options) (*Stack, error) {
	if dev == nil || h == nil {
		return nil, errors.New("netstack: nil device or handler")
	}
	if opts.MTU == 0 {
		mtu, err := dev.MTU()
		if err != nil {
			return nil, fmt.Errorf("netstack: device MTU: %w", err)
		}
		opts.MTU = mtu
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = 512
	}
	if opts.MaxInFlightPerHost == 0 {
		opts.MaxInFlightPerHost = 64
	}
	opts.MaxInFlightPerHost = min(opts.MaxInFlightPerHost, opts.MaxInFlight)
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 15 * time.Second
	}
	if opts.UDPIdle == 0 {
		opts.UDPIdle = 2 * time.Minute
	}
	if opts.DNSIdle == 0 {
		opts.DNSIdle = 30 * time.Second
	}
	if opts.MaxUDP == 0 {
		opts.MaxUDP = 4096
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Stack{opts: opts, log: log, handler: h, dev: dev, ctx: ctx, cancel: cancel, flows: flowtab.New()}
	s.udp.init()
	s.tcpBufs.New = func() any { b := make([]byte, 64<<10); return &b }
	s.pings.m = make(map[pingKey]*pingAssoc)
	s.link = newLinkEndpoint(dev, uint32(opts.MTU), log, s.syns.record)

	s.ip = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	fail := func(what string, e tcpip.Error) (*Stack, error) {
		s.ip.Close()
		cancel()
		return nil, fmt.Errorf("netstack: %s: %v", what, e)
	}
	// SACK on, RACK off (it misbehaves with the sub-millisecond RTTs of a local
	// TUN), as Tailscale found (tailscale/tailscale#9707).
	sack := tcpip.TCPSACKEnabled(true)
	if e := s.ip.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); e != nil {
		return fail("enable SACK", e)
	}
	// TIME_WAIT on the TUN, a lossless local link, needs to outlast only a
	// retransmission of the application's FIN by the local kernel; gVisor's default
	// minute held ~38 KiB per connection whose destination had closed first.
	tw := tcpip.TCPTimeWaitTimeoutOption(timeWait)
	if e := s.ip.SetTransportProtocolOption(tcp.ProtocolNumber, &tw); e != nil {
		return fail("set TIME_WAIT", e)
	}
	rack := tcpip.TCPRecovery(0)
	if e := s.ip.SetTransportProtocolOption(tcp.ProtocolNumber, &rack); e != nil {
		return fail("disable RACK", e)
	}
	// Handlers go in before the NIC exists, so no early packet finds none.
	fwd := tcp.NewForwarder(s.ip, 0, opts.MaxInFlight, s.handleTCP)
	s.ip.SetTransportProtocolHandler(tcp.ProtocolNumber, fwd.HandlePacket)
	s.ip.SetTransportProtocolHandler(udp.ProtocolNumber, s.handleUDP)
	s.ip.SetTransportProtocolHandler(icmp.ProtocolNumber4, s.handleICMP)
	s.ip.SetTransportProtocolHandler(icmp.ProtocolNumber6, s.handleICMP)
	if e := s.ip.CreateNIC(nicID, s.link); e != nil {
		return fail("create NIC", e)
	}
	// Promiscuous: accept packets to any address. Spoofing: send from any address
	// (replies come from the remote's address, not ours).
	if e := s.ip.SetPromiscuousMode(nicID, true); e != nil {
		return fail("promiscuous mode", e)
	}
	if e := s.ip.SetSpoofing(nicID, true); e != nil {
		return fail("spoofing", e)
	}
	s.ip.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})
	return s, nil
}

// Stats returns the stack's counters.
func (s *Stack) Stats() Stats {
	return Stats{
		TCPActive:      int(s.tcpActive.Load()),
		UDPActive:      s.udp.len(),
		TCPTotal:       s.tcpTotal.Load(),
		UDPTotal:       s.udpTotal.Load(),
		TCPRefused:     s.tcpRefused.Load(),
		TCPDeferred:    s.tcpDeferred.Load(),
		UDPDropped:     s.udpDropped.Load(),
		EchoRequests:   s.echoReqs.Load(),
		EchoUnanswered: s.echoUnanswered.Load(),
	}
}

// addFlow counts a flow that ends by itself (it calls s.wg.Done) in what Close waits
// for, unless the stack is closing.
func (s *Stack) addFlow() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// goFlow runs f as a flow goroutine owned by the stack, unless the stack is closing.
func (s *Stack) goFlow(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// Close stops the stack: every flow is aborted, the device is closed, and Close returns
// once every goroutine the stack started has ended.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.udp.closeAll()
	s.closePings()
	s.ip.Close() // aborts every endpoint: relays see errors and end
	err := s.dev.Close()
	s.link.Wait()
	s.ip.Wait()
	s.wg.Wait()
	return err
}

func addrFrom(a tcpip.Address) netip.Addr {
	switch a.Len() {
	case 4:
		return netip.AddrFrom4(a.As4())
	case 16:
		return netip.AddrFrom16(a.As16())
	}
	return netip.Addr{}
}

func tcpipAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}
