package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/shrink"
	"github.com/tetherd/tetherd/internal/slots"
	"github.com/tetherd/tetherd/transport/wire"
)

// A session runs one tether.v1 connection. Two goroutines own the WebSocket: the reader
// (readLoop) parses every frame and hands it to the stream it belongs to, never
// blocking on a stream; the writer (writeLoop) sends what streams queued. Streams never
// touch the WebSocket themselves.
//
// Outgoing frames wait in two queues: pri (control frames and datagrams, sent first) and
// data (DATA frames, bounded by Config.WriteBuffer, in the order they were written). A
// frame that must follow a stream's data (FIN, and the RESET that Close sends after it)
// goes in the data queue; everything else goes in pri.

// Stats are a session's counters.
type Stats struct {
	BytesSent        uint64 // stream payload bytes sent
	BytesReceived    uint64 // stream payload bytes received
	WireBytesSent    uint64 // all frame bytes written to the WebSocket
	WireBytesRecv    uint64 // all frame bytes read from the WebSocket
	DgramsSent       uint64
	DgramsReceived   uint64
	DgramsDropped    uint64 // datagrams dropped because a queue was full or policy denied them
	StreamsOpen      int    // TCP streams in the table now
	AssociationsOpen int    // UDP and ICMP associations in the table now
	StreamsTotal     uint64 // streams and associations opened since the start
	RTT              time.Duration
}

// corker is a connection that can hold back writes and send them together.
type corker interface {
	Cork()
	Flush() error
}

// entry is what the session's table holds: a TCP stream or an association.
type entry interface {
	id() uint32
	onReply(r wire.Reply)
	onWindow(inc uint32)
	onReset(r wire.Reset)
	// fail ends the entry when the session dies.
	fail(err error)
}

type session struct {
	conn   *websocket.Conn
	client bool
	cfg    Config
	log    *zap.Logger
	cork   corker // coalesces each round of writes into one (client side); may be nil

	ctx    context.Context // canceled once the WebSocket is closed
	cancel context.CancelFunc
	// life is canceled as soon as the session ends; work done for the session (dials)
	// uses it.
	life       context.Context
	lifeCancel context.CancelFunc
	wg         sync.WaitGroup // readLoop, writeLoop, keepaliveLoop
	bg         sync.WaitGroup // the close watchdog

	// writer state, guarded by wmu
	wmu        sync.Mutex
	pri        []byte
	data       []byte
	dgramBytes int
	space      chan struct{} // closed and replaced when the data queue drains
	wake       notify
	// The last DATA frame in data, while it is the last frame there: small writes
	// of the same stream are appended to it (one header, one frame) instead of
	// queueing a frame each. lastDataAt is the offset of its header.
	lastDataOK     bool
	lastDataAt     int
	lastDataStream uint32
	// writing is set while one goroutine writes a round to the WebSocket: writeLoop,
	// or a stream writer sending a small frame itself (see queueData). The holder
	// owns spare, the buffers of the previous round, for the next.
	writing   bool
	sparePri  []byte
	spareData []byte

	// openMu makes taking a new id and queueing its OPEN one step (client side), so
	// that OPENs leave in increasing id order as the peer requires. Taken before mu
	// and wmu, never while holding them.
	openMu sync.Mutex

	// stream table, guarded by mu
	mu            sync.Mutex
	entries       map[uint32]entry
	entriesPeak   shrink.Peak
	lastID        uint32 // client: last id used; server: highest id opened by the client
	nStreams      int
	nAssocs       int
	pending       slots.Table[pendingHost] // server: opens in progress, by host
	goingAway     bool                     // this side sent GOAWAY
	remoteGoAway  bool                     // the other side sent GOAWAY
	goAwayDone    chan struct{}
	goAwayRecv    chan struct{} // closed when the other side sent GOAWAY
	peerSettings  chan struct{} // closed when the other side's SETTINGS arrived
	peerWindow    uint32
	peerMaxFrame  uint32
	peerMaxStream uint32

	windowBudget atomic.Int64 // bytes of stream window granted beyond the initial ones

	// set once when the session ends
	closeOnce sync.Once
	done      chan struct{}
	err       error

	lastRecv atomic.Int64 // unix nanoseconds of the last frame received
	rtt      rttStats
	pingMu   sync.Mutex
	pingSent map[[8]byte]time.Time
	pingWait map[[8]byte]chan time.Duration

	bytesSent, bytesRecv, wireSent, wireRecv atomic.Uint64
	dgramsSent, dgramsRecv, dgramsDropped    atomic.Uint64
	streamsTotal                             atomic.Uint64

	// onOpen handles an OPEN on the server side; it must not block.
	onOpen func(e entry, o wire.Open)
}

func newSession(conn *websocket.Conn, client bool, cfg Config, log *zap.Logger) *session {
	ctx, cancel := context.WithCancel(context.Background())
	life, lifeCancel := context.WithCancel(ctx)
	s := &session{
		life:          life,
		lifeCancel:    lifeCancel,
		conn:          conn,
		client:        client,
		cfg:           cfg,
		log:           log,
		ctx:           ctx,
		cancel:        cancel,
		space:         make(chan struct{}),
		wake:          newNotify(),
		entries:       make(map[uint32]entry),
		peerSettings:  make(chan struct{}),
		goAwayDone:    make(chan struct{}),
		goAwayRecv:    make(chan struct{}),
		done:          make(chan struct{}),
		pingSent:      make(map[[8]byte]time.Time),
		pingWait:      make(map[[8]byte]chan time.Duration),
		peerWindow:    uint32(cfg.InitialWindow),
		peerMaxFrame:  64 << 10,
		peerMaxStream: uint32(cfg.MaxStreams),
	}
	conn.SetReadLimit(wire.MaxMessage)
	s.lastRecv.Store(time.Now().UnixNano())
	s.pri = wire.AppendSettings(s.pri, []wire.Setting{
		{ID: wire.SettingInitialWindow, Value: uint32(cfg.InitialWindow)},
		{ID: wire.SettingMaxFrame, Value: uint32(cfg.MaxFrame)},
		{ID: wire.SettingMaxStreams, Value: uint32(cfg.MaxStreams)},
	})
	s.wake.signal()
	return s
}

// start launches the session's goroutines. They end when the session ends.
func (s *session) start() {
	s.wg.Add(3)
	go s.readLoop()
	go s.writeLoop()
	go s.keepaliveLoop()
}

// Done returns a channel closed when the session has ended.
func (s *session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended, nil while it runs or after a clean close.
func (s *session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// shutdown ends the session with err (nil for a clean close): it fails every entry at
// once and tells the writer to close the WebSocket — after sending what is queued when
// the close is clean — with a status and reason derived from err. It never blocks, so
// any goroutine may call it, any number of times. A watchdog closes the connection
// hard if the writer cannot finish within closeTimeout.
func (s *session) shutdown(err error) {
	s.closeOnce.Do(func() {
		s.err = err
		s.mu.Lock()
		entries := make([]entry, 0, len(s.entries))
		for _, e := range s.entries {
			entries = append(entries, e)
		}
		s.entries = map[uint32]entry{}
		s.nStreams, s.nAssocs = 0, 0
		s.mu.Unlock()
		close(s.done)
		s.lifeCancel()
		serr := error(ErrSessionClosed)
		if err != nil {
			serr = err
		}
		for _, e := range entries {
			e.fail(serr)
		}
		s.pingMu.Lock()
		for k, ch := range s.pingWait {
			close(ch)
			delete(s.pingWait, k)
		}
		s.pingMu.Unlock()
		s.wake.signal()
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			t := time.NewTimer(closeTimeout)
			defer t.Stop()
			select {
			case <-s.ctx.Done():
			case <-t.C:
				s.log.Debug("close handshake did not finish; closing hard")
				_ = s.conn.CloseNow()
				s.cancel()
			}
		}()
	})
}

// closeTimeout bounds how long a session may take to close its WebSocket.
const closeTimeout = 7 * time.Second

// closeStatus maps the session's error to a WebSocket close status and reason.
func (s *session) closeStatus() (websocket.StatusCode, string) {
	code, reason := websocket.StatusNormalClosure, ""
	var pe *protocolError
	switch {
	case errors.As(s.err, &pe):
		code, reason = websocket.StatusProtocolError, pe.msg
	case s.err != nil:
		code, reason = websocket.StatusGoingAway, s.err.Error()
	}
	if len(reason) > 120 { // a close reason is at most 123 bytes
		reason = reason[:120]
	}
	return code, reason
}

// close ends the session and waits for all of its goroutines. It must not be called
// from the session's own goroutines.
func (s *session) close(err error) {
	s.shutdown(err)
	s.wg.Wait()
	s.bg.Wait()
}

// Stats returns the session's counters.
func (s *session) Stats() Stats {
	s.mu.Lock()
	st := Stats{StreamsOpen: s.nStreams, AssociationsOpen: s.nAssocs}
	s.mu.Unlock()
	st.BytesSent = s.bytesSent.Load()
	st.BytesReceived = s.bytesRecv.Load()
	st.WireBytesSent = s.wireSent.Load()
	st.WireBytesRecv = s.wireRecv.Load()
	st.DgramsSent = s.dgramsSent.Load()
	st.DgramsReceived = s.dgramsRecv.Load()
	st.DgramsDropped = s.dgramsDropped.Load()
	st.StreamsTotal = s.streamsTotal.Load()
	st.RTT = s.rtt.smoothedRTT()
	return st
}

// ---- reading ----

func (s *session) readLoop() {
	defer s.wg.Done()
	err := s.read()
	if errors.Is(err, io.EOF) || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
		s.mu.Lock()
		clean := s.goingAway || s.remoteGoAway || len(s.entries) == 0
		s.mu.Unlock()
		if clean {
			err = nil
		} else {
			err = &SessionError{Reason: "peer closed the connection"}
		}
	}
	var pe *protocolError
	if err != nil && !errors.As(err, &pe) {
		if _, ok := err.(*SessionError); !ok {
			err = &SessionError{Reason: "read", Err: err}
		}
	}
	s.shutdown(err)
}

func (s *session) read() error {
	br := bufio.NewReaderSize(nil, 32<<10)
	var hdr [wire.HeaderLen]byte
	scratch := make([]byte, 0, 2<<10)
	first := true
	for {
		typ, r, err := s.conn.Reader(s.ctx)
		if err != nil {
			return err
		}
		if typ != websocket.MessageBinary {
			return protoErrorf("text message received; tether.v1 uses binary messages only")
		}
		br.Reset(r)
		for {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				if err == io.EOF {
					break // end of message at a frame boundary
				}
				if err == io.ErrUnexpectedEOF {
					return protoErrorf("message ends inside a frame header")
				}
				return err
			}
			h, err := wire.ParseHeader(hdr[:], uint32(s.cfg.MaxFrame))
			if err != nil {
				return protoErrorf("%v", err)
			}
			if first != (h.Type == wire.TypeSettings) {
				if first {
					return protoErrorf("first frame is %v, want SETTINGS", h.Type)
				}
				return protoErrorf("second SETTINGS frame")
			}
			first = false
			s.wireRecv.Add(uint64(wire.HeaderLen + h.Length))
			s.lastRecv.Store(time.Now().UnixNano())
			if h.Type == wire.TypeData {
				if err := s.readData(br, h); err != nil {
					return err
				}
				continue
			}
			if cap(scratch) < int(h.Length) {
				scratch = make([]byte, h.Length)
			}
			p := scratch[:h.Length]
			if _, err := io.ReadFull(br, p); err != nil {
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					return protoErrorf("%v frame on stream %d: message ends inside the payload", h.Type, h.Stream)
				}
				return err
			}
			if err := s.handle(h, p); err != nil {
				return err
			}
		}
	}
}

// readData reads the payload of a DATA frame straight into a pooled buffer owned by the
// stream, or discards it when the stream is gone.
func (s *session) readData(br *bufio.Reader, h wire.Header) error {
	s.mu.Lock()
	e, ok := s.entries[h.Stream]
	known := h.Stream <= s.lastID
	s.mu.Unlock()
	st, isStream := e.(*Stream)
	if !ok || !isStream {
		if !known {
			return protoErrorf("DATA on stream %d, which was never opened", h.Stream)
		}
		if ok && !isStream {
			return protoErrorf("DATA on datagram association %d", h.Stream)
		}
		if _, err := br.Discard(int(h.Length)); err != nil {
			return protoErrorf("DATA frame on stream %d: message ends inside the payload", h.Stream)
		}
		return nil
	}
	var buf *[]byte
	if h.Length > 0 {
		buf = getBuf(int(h.Length))
		if _, err := io.ReadFull(br, *buf); err != nil {
			putBuf(buf)
			return protoErrorf("DATA frame on stream %d: message ends inside the payload", h.Stream)
		}
		s.bytesRecv.Add(uint64(h.Length))
	}
	st.onData(buf, h.Flags&wire.FlagFIN != 0)
	return nil
}

// handle processes every frame but DATA.
func (s *session) handle(h wire.Header, p []byte) error {
	switch h.Type {
	case wire.TypeSettings:
		set, err := wire.ParseSettings(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		for _, v := range set {
			switch v.ID {
			case wire.SettingInitialWindow:
				if v.Value < 1024 || v.Value > wire.MaxWindow {
					return protoErrorf("SETTINGS INITIAL_WINDOW %d out of range", v.Value)
				}
				s.peerWindow = v.Value
			case wire.SettingMaxFrame:
				if v.Value < 1024 || v.Value > wire.MaxFrameLimit {
					return protoErrorf("SETTINGS MAX_FRAME %d out of range", v.Value)
				}
				s.peerMaxFrame = v.Value
			case wire.SettingMaxStreams:
				if v.Value < 1 {
					return protoErrorf("SETTINGS MAX_STREAMS 0")
				}
				s.peerMaxStream = v.Value
			}
		}
		close(s.peerSettings)
		return nil
	case wire.TypePing:
		var data [8]byte
		copy(data[:], p)
		if h.Flags&wire.FlagACK == 0 {
			return s.queuePong(data)
		}
		s.onPong(data)
		return nil
	case wire.TypeGoAway:
		g, err := wire.ParseGoAway(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		s.log.Info("peer is going away", zap.Stringer("code", g.Code), zap.String("reason", g.Reason))
		s.mu.Lock()
		if !s.remoteGoAway {
			s.remoteGoAway = true
			close(s.goAwayRecv)
		}
		s.mu.Unlock()
		s.maybeFinishGoAway()
		return nil
	case wire.TypeOpen:
		return s.handleOpen(h, p)
	}

	// Frames for a stream.
	s.mu.Lock()
	e, ok := s.entries[h.Stream]
	known := h.Stream <= s.lastID
	s.mu.Unlock()
	if !ok {
		if !known {
			return protoErrorf("%v on stream %d, which was never opened", h.Type, h.Stream)
		}
		return wire.CheckPayload(h, p) // in flight after the stream ended: check, then drop
	}
	switch h.Type {
	case wire.TypeReply:
		if !s.client {
			return protoErrorf("REPLY sent by the client")
		}
		r, err := wire.ParseReply(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		e.onReply(r)
	case wire.TypeWindow:
		inc, err := wire.ParseWindow(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		e.onWindow(inc)
	case wire.TypeReset:
		r, err := wire.ParseReset(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		e.onReset(r)
	case wire.TypeDgram:
		a, data, err := wire.ParseDgram(p)
		if err != nil {
			return protoErrorf("%v", err)
		}
		as, ok := e.(*Association)
		if !ok {
			return protoErrorf("DGRAM on TCP stream %d", h.Stream)
		}
		s.dgramsRecv.Add(1)
		as.onDgram(a, data)
	}
	return nil
}

// ---- liveness ----

func (s *session) keepaliveLoop() {
	defer s.wg.Done()
	if s.cfg.KeepAlive <= 0 {
		select {
		case <-s.ctx.Done():
		case <-s.done:
		}
		return
	}
	_, _ = s.sendPing() // measure the RTT right away, not one interval later
	t := time.NewTicker(s.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.done:
			return
		case now := <-t.C:
			silent := now.Sub(time.Unix(0, s.lastRecv.Load()))
			if silent > s.cfg.KeepAliveTimeout {
				s.shutdown(&SessionError{Reason: fmt.Sprintf("keepalive: nothing received for %v", silent.Round(time.Millisecond))})
				return
			}
			_, _ = s.sendPing()
		}
	}
}

// sendPing queues a PING and returns its key.
func (s *session) sendPing() ([8]byte, error) {
	var key [8]byte
	_, _ = rand.Read(key[:])
	return key, s.queuePing(key)
}

// queuePing queues a PING with key and notes when it left.
func (s *session) queuePing(key [8]byte) error {
	s.pingMu.Lock()
	if len(s.pingSent) > 64 { // answers that never came; forget them
		clear(s.pingSent)
	}
	s.pingSent[key] = time.Now()
	s.pingMu.Unlock()
	return s.queuePri(func(b []byte) []byte { return wire.AppendPing(b, false, key) })
}

// probe sends a PING to measure the queueing delay while stream data flows to this
// side, unless one is unanswered or the last left moments ago (see rtt.go).
func (s *session) probe(now time.Time) {
	if key, ok := s.rtt.startProbe(now); ok {
		_ = s.queuePing(key)
	}
}

func (s *session) onPong(key [8]byte) {
	s.pingMu.Lock()
	sent, ok := s.pingSent[key]
	delete(s.pingSent, key)
	ch := s.pingWait[key]
	delete(s.pingWait, key)
	s.pingMu.Unlock()
	s.rtt.pong(key)
	if !ok {
		return
	}
	now := time.Now()
	s.rtt.add(sent, now)
	if ch != nil {
		ch <- now.Sub(sent)
	}
}

// Ping measures one round trip.
func (s *session) Ping(ctx context.Context) (time.Duration, error) {
	ch := make(chan time.Duration, 1)
	var key [8]byte
	_, _ = rand.Read(key[:])
	s.pingMu.Lock()
	s.pingWait[key] = ch
	s.pingMu.Unlock()
	if err := s.queuePing(key); err != nil {
		return 0, err
	}
	select {
	case rtt, ok := <-ch:
		if !ok {
			return 0, ErrSessionClosed
		}
		return rtt, nil
	case <-ctx.Done():
		s.pingMu.Lock()
		delete(s.pingWait, key)
		s.pingMu.Unlock()
		return 0, ctx.Err()
	case <-s.done:
		return 0, ErrSessionClosed
	}
}

// ---- graceful shutdown ----

// goAway sends GOAWAY, refuses new streams, and waits until every stream has finished
// or ctx is done; then it closes the session.
func (s *session) goAway(ctx context.Context, reason string) error {
	s.mu.Lock()
	already := s.goingAway
	s.goingAway = true
	last := s.lastID
	s.mu.Unlock()
	if !already {
		g := wire.GoAway{LastStream: last, Code: wire.CodeGoingAway, Reason: reason}
		if err := s.queuePri(func(b []byte) []byte { return wire.AppendGoAway(b, g) }); err != nil {
			return err
		}
		s.endAssociations()
	}
	s.maybeFinishGoAway()
	select {
	case <-s.goAwayDone:
		s.close(nil)
		return nil
	case <-s.done:
		s.close(nil)
		return s.Err()
	case <-ctx.Done():
		s.close(&SessionError{Reason: "shutdown deadline passed with streams still open"})
		return ctx.Err()
	}
}

// endAssociations resets every datagram association: unlike a TCP stream, an
// association has no end of its own to wait for, and the other side reopens it on its
// next session.
func (s *session) endAssociations() {
	s.mu.Lock()
	var list []*Association
	for _, e := range s.entries {
		if a, ok := e.(*Association); ok {
			list = append(list, a)
		}
	}
	s.mu.Unlock()
	for _, a := range list {
		a.reset(wire.CodeGoingAway, "session going away")
	}
}

func (s *session) maybeFinishGoAway() {
	s.mu.Lock()
	finished := (s.goingAway || s.remoteGoAway) && len(s.entries) == 0 && !isClosed(s.goAwayDone)
	closeNow := finished && s.remoteGoAway && !s.goingAway
	if finished {
		close(s.goAwayDone)
	}
	s.mu.Unlock()
	if closeNow {
		// The other side asked to go away and nothing is left: close cleanly.
		s.shutdown(nil)
	}
}
