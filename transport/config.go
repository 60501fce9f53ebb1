// Package transport carries TCP streams and UDP/ICMP datagrams between a client (the
// laptop) and a peer (the phone) over one multiplexed WebSocket, speaking the tether.v1
// protocol described in docs/protocol.md.
//
// The client side is Dial, which returns a *Session; Session.OpenTCP returns a *Stream
// (a net.Conn with CloseWrite) and Session.OpenUDP an *Association (a net.PacketConn).
// The peer side is Server, an http.Handler that can be mounted in any HTTP server.
package transport

import (
	"fmt"
	"time"

	"github.com/tetherd/tetherd/transport/wire"
)

// Config holds the limits and timers of a session. The zero value of every field means
// its default; a nil *Config means all defaults.
type Config struct {
	// InitialWindow is the credit in bytes granted to the other side for every new
	// stream. Default 256 KiB.
	InitialWindow int
	// MaxWindow is the largest a stream's window grows to by auto-tuning. Default 16 MiB.
	MaxWindow int
	// SessionWindow caps the sum of all stream windows of the session, so the memory
	// a session can be made to hold is bounded. Default 64 MiB.
	SessionWindow int
	// MaxFrame is the largest frame payload this side accepts. Default 64 KiB.
	MaxFrame int
	// MaxStreams is how many streams and associations may be open at once in a
	// session. Default 16384.
	MaxStreams int
	// MaxPendingOpens is how many OPENs a server dials at once per session; more are
	// refused with LIMIT. Default 1024.
	MaxPendingOpens int
	// MaxPendingOpensPerHost is how many of those one host (address or name, any
	// port) may hold once half of them are taken: dials to a host that does not
	// answer — which an application may have given up on long before the dial
	// timeout — then cannot take every slot from the hosts that do, while a burst
	// to one host is not limited as long as there is room. Default 64, at most
	// MaxPendingOpens.
	MaxPendingOpensPerHost int
	// WriteBuffer is how many bytes of stream data may wait for the WebSocket; a
	// writer beyond it blocks. Small keeps latency low. Default 512 KiB.
	WriteBuffer int
	// DgramQueue is how many bytes of datagrams may wait for the WebSocket, and (as
	// a count of datagrams, divided by 1 KiB) how many received datagrams wait per
	// association; datagrams beyond it are dropped and counted. Default 512 KiB.
	DgramQueue int
	// KeepAlive is the interval between PINGs. Default 5 s.
	KeepAlive time.Duration
	// KeepAliveTimeout is how long the session may go without receiving any frame
	// before it is declared dead. Default 15 s.
	KeepAliveTimeout time.Duration
}

// withDefaults returns a copy of c (which may be nil) with every zero field set to its
// default, and checks the values.
func (c *Config) withDefaults() (Config, error) {
	var o Config
	if c != nil {
		o = *c
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.InitialWindow, 256<<10)
	def(&o.MaxWindow, 16<<20)
	def(&o.SessionWindow, 64<<20)
	def(&o.MaxFrame, 64<<10)
	def(&o.MaxStreams, 16384)
	def(&o.MaxPendingOpens, 1024)
	def(&o.MaxPendingOpensPerHost, min(64, o.MaxPendingOpens))
	def(&o.WriteBuffer, 512<<10)
	def(&o.DgramQueue, 512<<10)
	if o.KeepAlive == 0 {
		o.KeepAlive = 5 * time.Second
	}
	if o.KeepAliveTimeout == 0 {
		o.KeepAliveTimeout = 15 * time.Second
	}
	switch {
	case o.InitialWindow < 1024 || o.InitialWindow > wire.MaxWindow:
		return o, fmt.Errorf("transport: InitialWindow %d out of range [1024, %d]", o.InitialWindow, wire.MaxWindow)
	case o.MaxWindow < o.InitialWindow || o.MaxWindow > wire.MaxWindow:
		return o, fmt.Errorf("transport: MaxWindow %d out of range [InitialWindow, %d]", o.MaxWindow, wire.MaxWindow)
	case o.SessionWindow < o.MaxWindow:
		return o, fmt.Errorf("transport: SessionWindow %d smaller than MaxWindow %d", o.SessionWindow, o.MaxWindow)
	case o.MaxFrame < 1024 || o.MaxFrame > wire.MaxFrameLimit:
		return o, fmt.Errorf("transport: MaxFrame %d out of range [1024, %d]", o.MaxFrame, wire.MaxFrameLimit)
	case o.MaxStreams < 1 || o.MaxPendingOpens < 1 || o.MaxPendingOpensPerHost < 1:
		return o, fmt.Errorf("transport: MaxStreams, MaxPendingOpens and MaxPendingOpensPerHost must be positive")
	case o.MaxPendingOpensPerHost > o.MaxPendingOpens:
		return o, fmt.Errorf("transport: MaxPendingOpensPerHost %d larger than MaxPendingOpens %d", o.MaxPendingOpensPerHost, o.MaxPendingOpens)
	case o.WriteBuffer < 16<<10 || o.WriteBuffer > wire.MaxMessage:
		return o, fmt.Errorf("transport: WriteBuffer %d out of range [16 KiB, %d]", o.WriteBuffer, wire.MaxMessage)
	case o.DgramQueue < 16<<10:
		return o, fmt.Errorf("transport: DgramQueue %d smaller than 16 KiB", o.DgramQueue)
	case o.KeepAlive < 0 || o.KeepAliveTimeout < o.KeepAlive:
		return o, fmt.Errorf("transport: KeepAliveTimeout %v must be at least KeepAlive %v", o.KeepAliveTimeout, o.KeepAlive)
	}
	return o, nil
}
