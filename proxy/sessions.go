package proxy

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/transport"
)

// SessionsOptions configures Sessions.
type SessionsOptions struct {
	// Dialer opens a new session to the peer. Required.
	Dialer func(ctx context.Context) (*transport.Session, error)
	// MaxBackoff caps the wait between failed dials. Default 5 s.
	MaxBackoff time.Duration
	// Logger receives a line per dial failure and per lost session; nil discards.
	Logger *zap.Logger
}

// Sessions keeps one live session: it dials on first use, and again (with
// exponential backoff after failures) once the session has ended or the peer has
// announced GOAWAY. Sessions going away keep their open streams until they end or
// Close is called. Its Session method fits Server.Session. It starts no goroutines.
type Sessions struct {
	opts SessionsOptions
	log  *zap.Logger

	dialing chan struct{} // a token: held by the one caller that dials

	mu       sync.Mutex
	cur      *transport.Session
	draining []*transport.Session
	backoff  time.Duration
	retryAt  time.Time
	lastErr  error
	closed   bool

	since            time.Time // when cur was dialed
	dialed           int       // sessions opened so far
	doneUp, doneDown uint64    // wire bytes of the sessions that ended
	lastEnd          string    // why the last session ended, or the last dial failed
}

// SessionsStats is the state of a Sessions.
type SessionsStats struct {
	// Connected reports a live session; Since is when it was opened.
	Connected bool
	Since     time.Time
	// RTT is the live session's smoothed round-trip time.
	RTT time.Duration
	// BytesUp and BytesDown count what crossed the link, all sessions.
	BytesUp, BytesDown uint64
	// Reconnects counts sessions opened after the first.
	Reconnects int
	// LastError is why the last session ended or the last dial failed.
	LastError string
}

// Stats returns the holder's state. A session is only noticed to have ended on the
// next call of Session; until then it counts as connected.
func (h *Sessions) Stats() SessionsStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := SessionsStats{
		BytesUp: h.doneUp, BytesDown: h.doneDown,
		Reconnects: max(h.dialed-1, 0), LastError: h.lastEnd,
	}
	for _, s := range append([]*transport.Session{h.cur}, h.draining...) {
		if s == nil {
			continue
		}
		ss := s.Stats()
		st.BytesUp += ss.WireBytesSent
		st.BytesDown += ss.WireBytesRecv
	}
	if s := h.cur; s != nil {
		select {
		case <-s.Done():
			if err := s.Err(); err != nil {
				st.LastError = err.Error()
			}
		default:
			st.Connected, st.Since, st.RTT = true, h.since, s.RTT()
		}
	}
	return st
}

// retireLocked closes s and adds its bytes to the totals.
func (h *Sessions) retireLocked(s *transport.Session) {
	s.Close()
	ss := s.Stats()
	h.doneUp += ss.WireBytesSent
	h.doneDown += ss.WireBytesRecv
	if err := s.Err(); err != nil {
		h.lastEnd = err.Error()
	}
}

// NewSessions returns a session holder; it does not dial yet.
func NewSessions(opts SessionsOptions) (*Sessions, error) {
	if opts.Dialer == nil {
		return nil, errors.New("proxy: SessionsOptions needs a Dialer")
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	return &Sessions{opts: opts, log: log, dialing: make(chan struct{}, 1)}, nil
}

// errClosed is returned by Session after Close.
var errClosed = errors.New("proxy: sessions closed")

// Session returns the live session, dialing a new one when there is none. While the
// previous dial failed recently it waits for the backoff to pass (or ctx).
func (h *Sessions) Session(ctx context.Context) (*transport.Session, error) {
	select {
	case h.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-h.dialing }()

	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errClosed
	}
	if s := h.cur; s != nil {
		select {
		case <-s.Done():
			h.log.Warn("session lost; redialing", zap.Error(s.Err()))
			h.retireLocked(s)
			h.cur = nil
		case <-s.GoingAway():
			h.log.Info("peer is going away; opening a new session")
			h.draining = append(h.draining, s)
			h.cur = nil
		default:
			h.mu.Unlock()
			return s, nil
		}
	}
	h.pruneLocked()
	wait := time.Until(h.retryAt)
	h.mu.Unlock()

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	s, err := h.opts.Dialer(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			h.backoff = min(max(2*h.backoff, 250*time.Millisecond), h.opts.MaxBackoff)
			h.retryAt = time.Now().Add(h.backoff/2 + rand.N(h.backoff/2+1))
			h.log.Info("dial failed", zap.Duration("retry_in", time.Until(h.retryAt)), zap.Error(err))
		}
		h.lastErr = err
		h.lastEnd = err.Error()
		return nil, err
	}
	if h.closed {
		s.Close()
		return nil, errClosed
	}
	h.backoff, h.retryAt, h.lastErr = 0, time.Time{}, nil
	h.cur = s
	h.since = time.Now()
	h.dialed++
	return s, nil
}

// pruneLocked closes draining sessions that have ended.
func (h *Sessions) pruneLocked() {
	live := h.draining[:0]
	for _, d := range h.draining {
		select {
		case <-d.Done():
			h.retireLocked(d)
		default:
			live = append(live, d)
		}
	}
	clear(h.draining[len(live):])
	h.draining = live
}

// Close closes the live session and the draining ones; Session fails afterwards.
func (h *Sessions) Close() error {
	h.mu.Lock()
	h.closed = true
	all := append(h.draining, h.cur)
	h.cur, h.draining = nil, nil
	h.mu.Unlock()
	for _, s := range all {
		if s != nil {
			s.Close()
		}
	}
	return nil
}
