package transport

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tetherd/tetherd/internal/shrink"
	"github.com/tetherd/tetherd/transport/wire"
)

// The session's table of streams and associations: OPENs admitted (server), ids
// registered (client), entries removed.

func (s *session) handleOpen(h wire.Header, p []byte) error {
	if s.client {
		return protoErrorf("OPEN sent by the server")
	}
	o, err := wire.ParseOpen(p)
	var refuse *wire.Reply
	switch {
	case errors.Is(err, wire.ErrBadName):
		refuse = &wire.Reply{Code: wire.CodeProtocol, Reason: "malformed host name"}
	case errors.Is(err, wire.ErrUnknownProto):
		refuse = &wire.Reply{Code: wire.CodeUnsupported, Reason: "unknown protocol " + o.Proto.String()}
	case err != nil:
		return protoErrorf("%v", err)
	}
	s.mu.Lock()
	if h.Stream <= s.lastID {
		last := s.lastID
		s.mu.Unlock()
		return protoErrorf("OPEN stream %d after stream %d: ids must increase", h.Stream, last)
	}
	s.lastID = h.Stream
	host := hostOf(o.Dst)
	switch {
	case refuse != nil:
	case s.goingAway:
		refuse = &wire.Reply{Code: wire.CodeGoingAway, Reason: "server is shutting down"}
	case s.nStreams+s.nAssocs >= s.cfg.MaxStreams:
		refuse = &wire.Reply{Code: wire.CodeLimit, Reason: fmt.Sprintf("too many streams (limit %d)", s.cfg.MaxStreams)}
	case s.pending.Total() >= s.cfg.MaxPendingOpens:
		refuse = &wire.Reply{Code: wire.CodeLimit, Reason: fmt.Sprintf("too many opens in progress (limit %d)", s.cfg.MaxPendingOpens)}
	case s.pending.Crowded(host, s.cfg.MaxPendingOpens, s.cfg.MaxPendingOpensPerHost):
		refuse = &wire.Reply{Code: wire.CodeLimit, Reason: fmt.Sprintf("too many opens in progress to %s (%d; limit %d a host once half of %d are taken)", host, s.pending.Held(host), s.cfg.MaxPendingOpensPerHost, s.cfg.MaxPendingOpens)}
	case s.onOpen == nil:
		refuse = &wire.Reply{Code: wire.CodeUnsupported, Reason: "this side accepts no streams"}
	}
	if refuse != nil {
		s.mu.Unlock()
		r := *refuse
		return s.queuePri(func(b []byte) []byte { return wire.AppendReply(b, h.Stream, r) })
	}
	var e entry
	if o.Proto == wire.ProtoTCP {
		e = newStream(s, h.Stream, o.Dst)
		s.nStreams++
	} else {
		e = newAssociation(s, h.Stream, o.Proto, o.Dst)
		s.nAssocs++
	}
	s.entries[h.Stream] = e
	s.entriesPeak.Grew(len(s.entries))
	s.pending.Take(host)
	s.mu.Unlock()
	s.streamsTotal.Add(1)
	s.onOpen(e, o)
	return nil
}

// openDone is called by the server once the OPEN to dst was answered.
func (s *session) openDone(dst wire.Addr) {
	s.mu.Lock()
	s.pending.Release(hostOf(dst))
	s.mu.Unlock()
}

// pendingHost is what the per-host limit of opens in progress counts by: the
// address or the name, not the port.
type pendingHost struct {
	ip   netip.Addr
	name string
}

func hostOf(a wire.Addr) pendingHost { return pendingHost{ip: a.IP, name: a.Name} }

func (h pendingHost) String() string {
	if h.name != "" {
		return h.name
	}
	return h.ip.String()
}

// register adds a client-side entry under a new id. It fails when the session ended,
// is going away, or holds as many streams as the server allows.
func (s *session) register(mk func(id uint32) entry, tcp bool) (entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.done:
		return nil, ErrSessionClosed
	default:
	}
	if s.goingAway || s.remoteGoAway {
		return nil, ErrGoingAway
	}
	if s.nStreams+s.nAssocs >= int(s.peerMaxStream) {
		return nil, &StreamError{Code: wire.CodeLimit, Reason: fmt.Sprintf("peer allows %d streams", s.peerMaxStream), Open: true}
	}
	if s.lastID == 1<<32-1 {
		return nil, ErrGoingAway // ids exhausted: a new session is needed
	}
	s.lastID++
	e := mk(s.lastID)
	s.entries[s.lastID] = e
	s.entriesPeak.Grew(len(s.entries))
	if tcp {
		s.nStreams++
	} else {
		s.nAssocs++
	}
	s.streamsTotal.Add(1)
	return e, nil
}

// remove deletes an entry from the table (idempotent) and returns the window it held
// beyond the initial one to the session budget.
func (s *session) remove(e entry, extraWindow int64) {
	s.mu.Lock()
	if cur, ok := s.entries[e.id()]; ok && cur == e {
		delete(s.entries, e.id())
		s.entries = shrink.Map(&s.entriesPeak, s.entries)
		if _, ok := e.(*Stream); ok {
			s.nStreams--
		} else {
			s.nAssocs--
		}
	}
	s.mu.Unlock()
	if extraWindow > 0 {
		s.windowBudget.Add(-extraWindow)
	}
	s.maybeFinishGoAway()
}
