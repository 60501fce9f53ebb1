package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tetherd/tetherd/transport"
)

// Status is the client's state as `tetherd status` shows it.
type Status struct {
	// State is "connected" or "reconnecting".
	State string `json:"state"`
	// Peer is the peer's URI with the token redacted.
	Peer string `json:"peer"`
	// TUN is the tunnel device's name.
	TUN string `json:"tun,omitempty"`
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
	lastUp         uint64 // totals at the last rate sample
	lastDown       uint64
	lastSample     time.Time
	rateUp         float64
	rateDown       float64
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

// sampleRates updates the one-second rates; Run calls it every second.
func (c *Client) sampleRates(now time.Time) {
	up, down := c.totals()
	c.status.mu.Lock()
	defer c.status.mu.Unlock()
	if !c.status.lastSample.IsZero() {
		dt := now.Sub(c.status.lastSample).Seconds()
		if dt > 0 && up >= c.status.lastUp && down >= c.status.lastDown {
			c.status.rateUp = float64(up-c.status.lastUp) / dt
			c.status.rateDown = float64(down-c.status.lastDown) / dt
		}
	}
	c.status.lastUp, c.status.lastDown, c.status.lastSample = up, down, now
}

// Status returns the client's state now.
func (c *Client) Status() Status {
	c.mu.Lock()
	s, stack := c.cur, c.stack
	c.mu.Unlock()
	up, down := c.totals()
	c.status.mu.Lock()
	out := Status{
		State:      "reconnecting",
		Peer:       c.opts.PeerName,
		TUN:        c.opts.TUNName,
		BytesUp:    up,
		BytesDown:  down,
		RateUp:     c.status.rateUp,
		RateDown:   c.status.rateDown,
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
	}
	return out
}

// ServeControl serves the client's status as JSON (GET /status) on ln until ctx is
// done. The listener is a Unix socket that only root can reach (the caller sets its
// permissions).
func (c *Client) ServeControl(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(c.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-done:
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	close(done)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
