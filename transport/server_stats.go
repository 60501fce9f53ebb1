package transport

import "sync/atomic"

// ServerStats are a Server's counters: the sessions running now, and totals since the
// server started (the sessions that ended included).
type ServerStats struct {
	// Sessions is how many sessions run now; SessionsTotal how many started.
	Sessions      int
	SessionsTotal uint64
	// RefusedToken counts upgrades refused for a missing or wrong token;
	// RefusedRateLimited those refused (429) because their source failed too often.
	RefusedToken, RefusedRateLimited uint64
	// BytesUp is stream payload received from clients, BytesDown sent to them.
	BytesUp, BytesDown uint64
	// StreamsOpen and AssociationsOpen are open now, in all sessions; StreamsTotal
	// counts both kinds opened since start.
	StreamsOpen, AssociationsOpen int
	StreamsTotal                  uint64
	// DgramsDropped counts datagrams dropped (full queues, policy).
	DgramsDropped uint64
}

// serverCounters are the totals a Server keeps; the sessions' own counters are
// added when they end.
type serverCounters struct {
	sessions, refusedToken, rateLimited  atomic.Uint64
	bytesUp, bytesDown, streams, dropped atomic.Uint64
}

// ended adds the final counters of a session.
func (c *serverCounters) ended(st Stats) {
	c.bytesUp.Add(st.BytesReceived)
	c.bytesDown.Add(st.BytesSent)
	c.streams.Add(st.StreamsTotal)
	c.dropped.Add(st.DgramsDropped)
}

// Stats returns the server's counters now. The totals and the running sessions are
// read under one lock, so a session ending meanwhile is counted exactly once.
func (srv *Server) Stats() ServerStats {
	c := &srv.counters
	srv.mu.Lock()
	defer srv.mu.Unlock()
	out := ServerStats{
		Sessions:           len(srv.sessions),
		SessionsTotal:      c.sessions.Load(),
		RefusedToken:       c.refusedToken.Load(),
		RefusedRateLimited: c.rateLimited.Load(),
		BytesUp:            c.bytesUp.Load(),
		BytesDown:          c.bytesDown.Load(),
		StreamsTotal:       c.streams.Load(),
		DgramsDropped:      c.dropped.Load(),
	}
	for s := range srv.sessions {
		st := s.Stats() // takes only the session's own lock, never srv.mu
		out.BytesUp += st.BytesReceived
		out.BytesDown += st.BytesSent
		out.StreamsTotal += st.StreamsTotal
		out.DgramsDropped += st.DgramsDropped
		out.StreamsOpen += st.StreamsOpen
		out.AssociationsOpen += st.AssociationsOpen
	}
	return out
}
