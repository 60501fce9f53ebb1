package daemon

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/tetherd/tetherd/transport"
)

// Status is the client's state as `tetherd status` shows it.
type Status struct {
	// Mode is "up" (the tunnel) or "proxy".
	Mode string `json:"mode"`
	// State is "connected" or "reconnecting".
	State string `json:"state"`
	// Peer is the peer's URI with the token redacted.
	Peer string `json:"peer"`
	// TUN is the tunnel device's name.
	TUN string `json:"tun,omitempty"`
	// Listen is the proxy's listening address (proxy mode).
	Listen string `json:"listen,omitempty"`
	// ConnectedSince is when the current session started (zero while reconnecting).
	ConnectedSince time.Time `json:"connected_since,omitzero"`
	// RTTMillis is the session's smoothed round-trip time.
	RTTMillis float64 `json:"rtt_ms"`
	// BytesUp and BytesDown count what crossed the link since start (all sessions).
	BytesUp   uint64 `json:"bytes_up"`
	BytesDown uint64 `json:"bytes_down"`
	// RateUp and RateDown are bytes per second over the last second.
	RateUp   float64 `json:"rate_up"`
	RateDown float64 `json:"rate_down"`
	// TCPFlows and UDPFlows are the flows open now.
	TCPFlows int `json:"tcp_flows"`
	UDPFlows int `json:"udp_flows"`
	// TCPFlowsTotal and UDPFlowsTotal count the flows opened since start;
	// TCPRefused the connections whose destination refused or could not be reached;
	// TCPDeferred the SYNs dropped (the application retransmits them) while their
	// destination held its share of the connects in progress; UDPDropped the
	// datagrams dropped (full queues, failed associations).
	TCPFlowsTotal uint64 `json:"tcp_flows_total"`
	UDPFlowsTotal uint64 `json:"udp_flows_total"`
	TCPRefused    uint64 `json:"tcp_refused"`
	TCPDeferred   uint64 `json:"tcp_deferred"`
	UDPDropped    uint64 `json:"udp_dropped"`
	// Reconnects counts sessions opened after the first.
	Reconnects int `json:"reconnects"`
	// LastError is why the last session ended, if one did.
	LastError string `json:"last_error,omitempty"`
}

// statusState is what the client records for its status, guarded by mu.
type statusState struct {
	mu             sync.Mutex
	connectedSince time.Time
	reconnects     int
	lastError      string
	doneUp         uint64 // bytes of sessions that ended
	doneDown       uint64
	rates          RateMeter
}

// RateMeter turns byte totals sampled about once a second (every few seconds while
// nothing moves) into rates. The zero value is ready to use; it is safe for
// concurrent use.
type RateMeter struct {
	mu               sync.Mutex
	lastUp, lastDown uint64
	last             time.Time
	up, down         float64
}

// Sample records the totals at now; the rates become the change since the previous
// sample, per second. It reports whether the totals moved since then.
func (m *RateMeter) Sample(now time.Time, up, down uint64) (moved bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	moved = up != m.lastUp || down != m.lastDown
	if !m.last.IsZero() {
		dt := now.Sub(m.last).Seconds()
		if dt > 0 && up >= m.lastUp && down >= m.lastDown {
			m.up = float64(up-m.lastUp) / dt
			m.down = float64(down-m.lastDown) / dt
		}
	}
	m.lastUp, m.lastDown, m.last = up, down, now
	return moved
}

// Rates returns bytes per second up and down between the last two samples.
func (m *RateMeter) Rates() (up, down float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.up, m.down
}

// sessionEnded adds a finished session's counters to the totals and records why it
// ended.
func (c *Client) sessionEnded(s *transport.Session) {
	st := s.Stats()
	c.status.mu.Lock()
	defer c.status.mu.Unlock()
	c.status.doneUp += st.WireBytesSent
	c.status.doneDown += st.WireBytesRecv
	if err := s.Err(); err != nil {
		c.status.lastError = err.Error()
	}
}

// totals returns the bytes sent and received over all sessions so far.
func (c *Client) totals() (up, down uint64) {
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	c.status.mu.Lock()
	up, down = c.status.doneUp, c.status.doneDown
	c.status.mu.Unlock()
	if s != nil {
		st := s.Stats()
		up += st.WireBytesSent
		down += st.WireBytesRecv
	}
	return up, down
}

// sampleRates updates the rates, and reports whether bytes moved since the last
// sample; Run calls it every second while anything changes, less often while the
// tunnel is idle.
func (c *Client) sampleRates(now time.Time) bool {
	up, down := c.totals()
	return c.status.rates.Sample(now, up, down)
}

// Status returns the client's state now.
func (c *Client) Status() Status {
	c.mu.Lock()
	s, stack := c.cur, c.stack
	c.mu.Unlock()
	up, down := c.totals()
	rateUp, rateDown := c.status.rates.Rates()
	c.status.mu.Lock()
	out := Status{
		Mode:       "up",
		State:      "reconnecting",
		Peer:       c.opts.PeerName,
		TUN:        c.opts.TUNName,
		BytesUp:    up,
		BytesDown:  down,
		RateUp:     rateUp,
		RateDown:   rateDown,
		Reconnects: c.status.reconnects,
		LastError:  c.status.lastError,
	}
	since := c.status.connectedSince
	c.status.mu.Unlock()
	if s != nil {
		out.State = "connected"
		out.ConnectedSince = since
		out.RTTMillis = float64(s.RTT().Microseconds()) / 1000
	}
	if stack != nil {
		ns := stack.Stats()
		out.TCPFlows, out.UDPFlows = ns.TCPActive, ns.UDPActive
		out.TCPFlowsTotal, out.UDPFlowsTotal = ns.TCPTotal, ns.UDPTotal
		out.TCPRefused, out.TCPDeferred, out.UDPDropped = ns.TCPRefused, ns.TCPDeferred, ns.UDPDropped
	}
	return out
}

// Flows returns the tunnel's open flows, oldest first.
func (c *Client) Flows() []Flow {
	c.mu.Lock()
	stack := c.stack
	c.mu.Unlock()
	if stack == nil {
		return []Flow{}
	}
	return stack.Flows()
}

// ServeControl serves the client's control socket on ln until ctx is done: see
// ServeControl.
func (c *Client) ServeControl(ctx context.Context, ln net.Listener) error {
	return ServeControl(ctx, ln, c)
}
