package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/tetherd/tetherd/transport/wire"
)

// abuseCases is the table of TestAbuse (abuse_test.go): tokens, junk upgrades,
// slowloris, sessions, streams, frames that break the protocol, and destinations the
// policy refuses.
func abuseCases() []abuseCase {
	var cases []abuseCase
	add := func(name string, attack func(t *testing.T, a *abuseHarness, hold func())) {
		cases = append(cases, abuseCase{name: name, attack: attack})
	}

	// ---- tokens ----
	refused := func(hdr map[string]string, status int, want string) func(*testing.T, *abuseHarness, func()) {
		return func(t *testing.T, a *abuseHarness, _ func()) {
			code, h, body := a.request(t, a.source(), upgradeHeaders(hdr))
			expectStatus(t, code, body, status, want)
			if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") != `Bearer realm="tetherd"` {
				t.Errorf("401 without WWW-Authenticate: %v", h)
			}
			for _, e := range a.logs.All() { // the token is never logged
				for k, v := range e.ContextMap() {
					if s := fmt.Sprint(v); strings.Contains(s, abuseToken) || strings.Contains(s, "not-the-token") {
						t.Errorf("log %q field %s shows a token: %q", e.Message, k, s)
					}
				}
			}
		}
	}
	add("token missing", refused(nil, 401, "missing token"))
	add("token wrong", refused(map[string]string{"Authorization": "Bearer not-the-token"}, 401, "wrong token"))
	add("token in another scheme", refused(map[string]string{"Authorization": "Basic " + abuseToken}, 401, "missing token"))
	add("token of another length", refused(map[string]string{"Authorization": "Bearer " + abuseToken + "x"}, 401, "wrong token"))
	add("token only in the URL query", func(t *testing.T, a *abuseHarness, _ func()) {
		url := a.httpURL
		a.httpURL += "?token=" + abuseToken
		defer func() { a.httpURL = url }()
		code, _, body := a.request(t, a.source(), upgradeHeaders(nil))
		expectStatus(t, code, body, 401, "missing token")
	})
	add("brute force from one address", func(t *testing.T, a *abuseHarness, hold func()) {
		src := a.source()
		for i := range abuseBurst {
			code, _, body := a.request(t, src, upgradeHeaders(map[string]string{"Authorization": fmt.Sprintf("Bearer guess-%d", i)}))
			expectStatus(t, code, body, 401, "wrong token")
		}
		for i := range 20 {
			code, h, body := a.request(t, src, upgradeHeaders(map[string]string{"Authorization": fmt.Sprintf("Bearer guess-more-%d", i)}))
			expectStatus(t, code, body, 429, "too many wrong tokens")
			if ra := h.Get("Retry-After"); ra == "" || ra == "0" {
				t.Fatalf("429 with Retry-After %q", ra)
			}
		}
		// Even the right token is not looked at now.
		code, _, body := a.request(t, src, upgradeHeaders(map[string]string{"Authorization": "Bearer " + abuseToken}))
		expectStatus(t, code, body, 429, "too many wrong tokens")
		hold()
		// Other addresses are not affected.
		s, err := Dial(ctxT(t), a.url, &DialOptions{Token: abuseToken, NetDialContext: dialerFrom(a.source()).DialContext})
		if err != nil {
			t.Fatalf("an honest client from another address: %v", err)
		}
		s.Close()
	})
	add("brute force from many addresses", func(t *testing.T, a *abuseHarness, hold func()) {
		counts := map[int]int{}
		const n = 120
		for i := range n {
			code, _, _ := a.request(t, a.source(), upgradeHeaders(map[string]string{"Authorization": fmt.Sprintf("Bearer guess-%d", i)}))
			counts[code]++
		}
		// The table fills with one entry per address; the addresses that find it full
		// share one bucket.
		if counts[401] != abuseSources+abuseBurst || counts[429] != n-abuseSources-abuseBurst {
			t.Fatalf("statuses %v, want %d × 401 then 429", counts, abuseSources+abuseBurst)
		}
		if got := a.srv.auth.len(); got != abuseSources {
			t.Fatalf("limiter tracks %d sources, bound %d", got, abuseSources)
		}
		hold()
	})

	// ---- junk upgrade requests (with the right token) ----
	tok := func(m map[string]string) map[string]string {
		m["Authorization"] = "Bearer " + abuseToken
		return m
	}
	add("no upgrade: plain GET", refused(map[string]string{"Upgrade": "", "Connection": ""}, 426, "speaks tether.v1"))
	add("upgrade to h2c", refused(tok(map[string]string{"Upgrade": "h2c"}), 426, "speaks tether.v1"))
	add("upgrade without Connection: Upgrade", refused(tok(map[string]string{"Connection": "keep-alive"}), 426, "Connection header"))
	add("upgrade without Sec-WebSocket-Key", refused(tok(map[string]string{"Sec-WebSocket-Key": ""}), 400, "missing Sec-WebSocket-Key"))
	add("upgrade with a malformed key", refused(tok(map[string]string{"Sec-WebSocket-Key": "!!"}), 400, "invalid Sec-WebSocket-Key"))
	add("upgrade to WebSocket version 8", refused(tok(map[string]string{"Sec-WebSocket-Version": "8"}), 400, "unsupported WebSocket protocol version"))
	add("upgrade offering tether.v2", refused(tok(map[string]string{"Sec-WebSocket-Protocol": "tether.v2"}), 426, "the client offered tether.v2"))
	add("upgrade offering no subprotocol", refused(tok(map[string]string{"Sec-WebSocket-Protocol": ""}), 426, "no subprotocol"))
	add("headers beyond MaxHeaderBytes", refused(tok(map[string]string{"X-Junk": strings.Repeat("j", 3*abuseMaxHeader)}), 431, ""))
	add("garbage instead of HTTP", func(t *testing.T, a *abuseHarness, _ func()) {
		c, err := dialerFrom(a.source()).Dial("tcp", a.hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 junk\r\n\r\n"))
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(c)
		if !bytes.HasPrefix(b, []byte("HTTP/1.1 400 Bad Request")) {
			t.Fatalf("answer %q, want 400 and a close", b)
		}
	})

	// ---- slowloris ----
	add("slow headers from one address", func(t *testing.T, a *abuseHarness, hold func()) {
		src := a.source()
		var slow []net.Conn
		for range abuseUnauthPerIP {
			c, err := dialerFrom(src).Dial("tcp", a.hs.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write([]byte("GET /tether HTTP/1.1\r\nHost: x\r\n")) // and never the end
			slow = append(slow, c)
		}
		waitFor(t, "the slow connections to be counted", func() bool { n, _, _ := a.srv.preAuth.counts(); return n == abuseUnauthPerIP })
		c, err := dialerFrom(src).Dial("tcp", a.hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := closedAtOnce(c); err != nil {
			t.Fatalf("connection %d from one address: %v", abuseUnauthPerIP+1, err)
		}
		hold()
		// Another address still gets a session, and the slow ones time out.
		s, err := Dial(ctxT(t), a.url, &DialOptions{Token: abuseToken, NetDialContext: dialerFrom(a.source()).DialContext})
		if err != nil {
			t.Fatalf("an honest client from another address: %v", err)
		}
		s.Close()
		for _, c := range slow {
			if err := closedAtOnce(c); err != nil { // ReadHeaderTimeout is 1 s
				t.Fatalf("slow connection after the header timeout: %v", err)
			}
		}
		waitFor(t, "the count to drop to zero", func() bool { n, _, _ := a.srv.preAuth.counts(); return n == 0 })
	})
	add("idle connections from many addresses", func(t *testing.T, a *abuseHarness, hold func()) {
		var conns []net.Conn
		for range abuseUnauth / abuseUnauthPerIP {
			src := a.source()
			for range abuseUnauthPerIP {
				c, err := dialerFrom(src).Dial("tcp", a.hs.Listener.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
		}
		waitFor(t, "the idle connections to be counted", func() bool { n, _, _ := a.srv.preAuth.counts(); return n == abuseUnauth })
		c, err := dialerFrom(a.source()).Dial("tcp", a.hs.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := closedAtOnce(c); err != nil {
			t.Fatalf("connection beyond the total cap: %v", err)
		}
		hold()
		for _, c := range conns {
			if err := closedAtOnce(c); err != nil {
				t.Fatalf("idle connection after the header timeout: %v", err)
			}
		}
		waitFor(t, "the count to drop to zero", func() bool { n, _, _ := a.srv.preAuth.counts(); return n == 0 })
		s, err := Dial(ctxT(t), a.url, &DialOptions{Token: abuseToken, NetDialContext: dialerFrom(a.source()).DialContext})
		if err != nil {
			t.Fatalf("a new client once the idle ones were closed: %v", err)
		}
		s.Close()
	})

	// ---- sessions ----
	add("sessions beyond MaxSessions", func(t *testing.T, a *abuseHarness, hold func()) {
		src := a.source()
		for range abuseSessions - 1 { // the honest session is the first
			a.mustRawSession(t, src)
		}
		_, resp, err := a.rawSession(t, src)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("session %d: %v, %v; want 503 with Retry-After", abuseSessions+1, resp, err)
		}
		hold()
	})
	add("authenticated but silent", func(t *testing.T, a *abuseHarness, _ func()) {
		p := a.mustRawSession(t, a.source()) // sends nothing, not even SETTINGS
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		for err == nil {
			_, _, err = p.conn.Read(ctx)
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || !strings.Contains(ce.Reason, "keepalive") {
			t.Fatalf("silent session closed with %v, want going away (keepalive)", err)
		}
	})

	// ---- streams ----
	cases = append(cases, abuseCase{name: "opens streams and never reads", heap: 48 << 20, attack: func(t *testing.T, a *abuseHarness, hold func()) {
		const n, window = 200, 64 << 10
		before := a.serverSessions()
		p := a.mustRawSession(t, a.source())
		ss := a.newServerSession(t, before)
		p.send(wire.AppendSettings(nil, []wire.Setting{{ID: wire.SettingInitialWindow, Value: window}}))
		keepTalking(t, p)
		// Open in batches the server dials at once, reading only the REPLYs (and
		// counting the DATA that comes with them).
		perStream := map[uint32]int{}
		total := 0
		count := func(h wire.Header, b []byte) {
			if h.Type == wire.TypeData {
				perStream[h.Stream] += len(b)
				total += len(b)
				if perStream[h.Stream] > window {
					t.Fatalf("stream %d got %d bytes with %d of credit", h.Stream, perStream[h.Stream], window)
				}
			}
		}
		for id := uint32(1); id <= n; id += abusePending {
			var msg []byte
			for i := id; i < id+abusePending && i <= n; i++ {
				msg = append(msg, openTCP(i, a.firehose)...)
			}
			p.send(msg)
			want := min(abusePending, n-int(id)+1)
			readFrames(t, p, func(h wire.Header, b []byte) bool {
				count(h, b)
				if h.Type == wire.TypeReply {
					if wire.Code(b[0]) != wire.CodeOK {
						t.Fatalf("REPLY %q", b)
					}
					want--
				}
				return want == 0
			})
		}
		// Read nothing more until the server has filled what it may and stopped.
		var last uint64
		stable := 0
		waitFor(t, "the server to stop sending", func() bool {
			sent := ss.Stats().BytesSent
			if sent == last && sent > 0 {
				stable++
			} else {
				stable = 0
			}
			last = sent
			time.Sleep(50 * time.Millisecond)
			return stable >= 10
		})
		hold()
		a.srv.mu.Lock()
		held := *a.srv.sessions[ss]
		a.srv.mu.Unlock()
		if held != abuseRelayBufs {
			t.Errorf("the session holds %d bytes of relay buffers, want the cap %d", held, abuseRelayBufs)
		}
		// Flow control held: no stream got more than the window it was given.
		if sent := ss.Stats().BytesSent; sent != n*window {
			t.Fatalf("server sent %d bytes with %d of credit", sent, n*window)
		}
		if total < n*window {
			readFrames(t, p, func(h wire.Header, b []byte) bool { count(h, b); return total >= n*window })
		}
		if len(perStream) != n {
			t.Fatalf("%d streams sent data, want %d", len(perStream), n)
		}
		p.conn.CloseNow()
		waitFor(t, "the hostile session to end", func() bool { return a.srv.Sessions() == 1 })
	}})
	add("opens faster than the server dials", func(t *testing.T, a *abuseHarness, hold func()) {
		p := a.mustRawSession(t, a.source())
		msg := settings()
		const n = abusePending + 40
		for i := uint32(1); i <= n; i++ {
			msg = append(msg, openTCP(i, wire.Addr{IP: blackholeIP, Port: 80})...)
		}
		p.send(msg)
		keepTalking(t, p)
		hs, rs := collect(t, p, n-abusePending, isReply)
		for i, r := range rs {
			if hs[i].Stream <= abusePending || wire.Code(r[0]) != wire.CodeLimit || !strings.Contains(string(r), "too many opens in progress") {
				t.Fatalf("REPLY on stream %d: %v %q, want LIMIT on streams beyond %d", hs[i].Stream, wire.Code(r[0]), r, abusePending)
			}
		}
		hold()
	})
	add("opens more streams than MaxStreams", func(t *testing.T, a *abuseHarness, hold func()) {
		p := a.mustRawSession(t, a.source())
		p.send(settings())
		keepTalking(t, p)
		// Open in batches the server dials at once, up to its limit.
		for id := uint32(1); id <= abuseMaxStreams; id += abusePending {
			var msg []byte
			for i := id; i < id+abusePending && i <= abuseMaxStreams; i++ {
				msg = append(msg, openTCP(i, a.echo)...)
			}
			p.send(msg)
			_, rs := collect(t, p, min(abusePending, abuseMaxStreams-int(id)+1), isReply)
			for _, r := range rs {
				if wire.Code(r[0]) != wire.CodeOK {
					t.Fatalf("REPLY %q below the limit", r)
				}
			}
		}
		p.send(openTCP(abuseMaxStreams+1, a.echo))
		_, rs := collect(t, p, 1, isReply)
		if r := rs[0]; wire.Code(r[0]) != wire.CodeLimit || !strings.Contains(string(r), fmt.Sprintf("too many streams (limit %d)", abuseMaxStreams)) {
			t.Fatalf("REPLY %q; want LIMIT", r)
		}
		hold()
	})
	add("PING flood without reading", func(t *testing.T, a *abuseHarness, hold func()) {
		p := a.mustRawSession(t, a.source())
		p.send(settings())
		var ping []byte
		for i := range 4096 { // 64 KiB of PINGs a message
			ping = wire.AppendPing(ping, false, [8]byte{byte(i)})
		}
		for range 512 { // 32 MiB of PINGs, 32 MiB of answers nobody reads
			if err := p.conn.Write(ctxT(t), websocket.MessageBinary, ping); err != nil {
				break // the server gave up on us
			}
		}
		hold()
		waitFor(t, "the server to end the session", func() bool {
			return a.logs.FilterMessage("session ended").FilterFieldKey("error").Len() > 0
		})
		e := a.logs.FilterMessage("session ended").FilterFieldKey("error").All()[0]
		if s := fmt.Sprint(e.ContextMap()["error"]); !strings.Contains(s, "peer does not read") {
			t.Fatalf("session ended with %s, want 'peer does not read'", s)
		}
	})

	// ---- frames that break the protocol: each ends the session with 1002 and a reason ----
	hdr := func(typ wire.Type, flags uint8, stream, length uint32) []byte {
		return wire.AppendHeader(nil, wire.Header{Type: typ, Flags: flags, Stream: stream, Length: length})
	}
	for _, v := range []struct {
		name   string
		msg    func(a *abuseHarness) []byte // one message; two for "message over 1 MiB"
		status websocket.StatusCode
		reason string
	}{
		{"truncated frame header", func(*abuseHarness) []byte { return cat(settings(), []byte{3, 0, 0}) }, websocket.StatusProtocolError, "inside a frame header"},
		{"unknown frame type", func(*abuseHarness) []byte { return cat(settings(), hdr(0x77, 0, 1, 0)) }, websocket.StatusProtocolError, "unknown frame type"},
		{"first frame not SETTINGS", func(a *abuseHarness) []byte { return openTCP(1, a.echo) }, websocket.StatusProtocolError, "want SETTINGS"},
		{"second SETTINGS", func(*abuseHarness) []byte { return cat(settings(), settings()) }, websocket.StatusProtocolError, "second SETTINGS"},
		{"DATA on a stream never opened", func(*abuseHarness) []byte { return cat(settings(), data(9, []byte("x"), false)) }, websocket.StatusProtocolError, "never opened"},
		{"RESET on a stream never opened", func(*abuseHarness) []byte {
			return cat(settings(), wire.AppendReset(nil, 4, wire.Reset{Code: wire.CodeCanceled}))
		}, websocket.StatusProtocolError, "never opened"},
		{"stream ids going back", func(a *abuseHarness) []byte { return cat(settings(), openTCP(5, a.echo), openTCP(3, a.echo)) }, websocket.StatusProtocolError, "ids must increase"},
		{"frame over MAX_FRAME", func(*abuseHarness) []byte {
			return cat(settings(), hdr(wire.TypeData, 0, 1, 70000), make([]byte, 70000))
		}, websocket.StatusProtocolError, "exceeds MAX_FRAME"},
		{"REPLY from the client", func(a *abuseHarness) []byte {
			return cat(settings(), openTCP(1, a.echo), wire.AppendReply(nil, 1, wire.Reply{}))
		}, websocket.StatusProtocolError, "REPLY sent by the client"},
		{"DGRAM on a TCP stream", func(a *abuseHarness) []byte {
			d, _ := wire.AppendDgram(nil, 1, a.echo, []byte("x"))
			return cat(settings(), openTCP(1, a.echo), d)
		}, websocket.StatusProtocolError, "DGRAM on TCP stream"},
		{"DATA on a UDP association", func(a *abuseHarness) []byte {
			o, _ := wire.AppendOpen(nil, 1, wire.Open{Proto: wire.ProtoUDP, Dst: wire.Addr{IP: netip.MustParseAddr("127.0.0.1"), Port: 53}})
			return cat(settings(), o, data(1, []byte("x"), false))
		}, websocket.StatusProtocolError, "DATA on datagram association"},
		{"WINDOW of zero", func(a *abuseHarness) []byte { return cat(settings(), openTCP(1, a.echo), wire.AppendWindow(nil, 1, 0)) }, websocket.StatusProtocolError, "WINDOW increment 0"},
		{"malformed GOAWAY", func(*abuseHarness) []byte { return cat(settings(), hdr(wire.TypeGoAway, 0, 0, 2), []byte{0, 0}) }, websocket.StatusProtocolError, "truncated"},
		{"OPEN with an unknown address type", func(*abuseHarness) []byte { return cat(settings(), hdr(wire.TypeOpen, 0, 1, 2), []byte{6, 9}) }, websocket.StatusProtocolError, "unknown address type"},
		{"PING with a stream id", func(*abuseHarness) []byte { return cat(settings(), hdr(wire.TypePing, 0, 3, 8), make([]byte, 8)) }, websocket.StatusProtocolError, "want stream 0"},
		{"message over 1 MiB", func(a *abuseHarness) []byte { return bigMessage(1) }, websocket.StatusMessageTooBig, ""},
	} {
		add("protocol: "+v.name, func(t *testing.T, a *abuseHarness, _ func()) {
			p := a.mustRawSession(t, a.source())
			if v.status == websocket.StatusMessageTooBig {
				p.send(cat(settings(), openTCP(1, a.echo)))
			}
			p.conn.Write(ctxT(t), websocket.MessageBinary, v.msg(a)) // the server may close first
			_, _, err := p.next(func(wire.Header, []byte) bool { return false })
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != v.status || !strings.Contains(ce.Reason, v.reason) {
				t.Fatalf("closed with %v, want status %v and a reason containing %q", err, v.status, v.reason)
			}
		})
	}
	add("protocol: text message", func(t *testing.T, a *abuseHarness, _ func()) {
		p := a.mustRawSession(t, a.source())
		p.conn.Write(ctxT(t), websocket.MessageText, []byte("hello"))
		_, _, err := p.next(func(wire.Header, []byte) bool { return false })
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusProtocolError || !strings.Contains(ce.Reason, "binary") {
			t.Fatalf("closed with %v", err)
		}
	})

	// ---- destinations the policy refuses, by address and by a name resolving to them ----
	for _, d := range []struct{ proto, dst, reason string }{
		{"tcp", "127.0.0.1:22", "the peer's loopback"},
		{"tcp", "127.9.9.9:22", "the peer's loopback"},
		{"tcp", "[::1]:22", "the peer's loopback"},
		{"tcp", "0.0.0.0:22", "unspecified address"},
		{"tcp", "0.1.2.3:22", "unspecified address"},
		{"tcp", "[::]:22", "unspecified address"},
		{"tcp", "169.254.1.1:80", "link-local"},
		{"tcp", "[fe80::1]:80", "link-local"},
		{"tcp", "169.254.169.254:80", "cloud metadata"},
		{"tcp", "169.254.170.2:80", "cloud metadata"},
		{"tcp", "[fd00:ec2::254]:80", "cloud metadata"},
		{"tcp", "100.100.100.200:80", "cloud metadata"},
		{"tcp", "168.63.129.16:80", "cloud metadata"},
		{"tcp", "[::ffff:169.254.169.254]:80", "cloud metadata"},
		{"tcp", "[64:ff9b::a9fe:a9fe]:80", "NAT64 form of 169.254.169.254"},
		{"tcp", "[64:ff9b::7f00:1]:22", "NAT64 form of 127.0.0.1"},
		{"tcp", "192.168.1.20:80", "in deny 192.168.0.0/16"},
		{"tcp", "10.1.2.3:445", "in deny 10.0.0.0/8"},
		{"tcp", "224.0.0.251:5353", "multicast or broadcast"},
		{"tcp", "255.255.255.255:9", "multicast or broadcast"},
		{"tcp", "198.51.100.7:0", "port 0"},
		{"tcp", "metadata.google.internal:80", "cloud metadata"},
		{"tcp", "localhost.example:22", "the peer's loopback"},
		{"tcp", "lan.example:80", "in deny 192.168.0.0/16"},
		{"tcp", "rebind.example:80", "the peer's loopback"},
		{"tcp", "nat64.example:80", "NAT64 form"},
		{"udp", "169.254.169.254:53", "cloud metadata"},
		{"udp", "localhost.example:53", "the peer's loopback"},
		{"udp", "192.168.1.1:53", "in deny 192.168.0.0/16"},
		{"icmp", "169.254.169.254:0", "cloud metadata"},
		{"icmp", "127.0.0.1:0", "the peer's loopback"},
	} {
		add(fmt.Sprintf("destination %s %s", d.proto, d.dst), func(t *testing.T, a *abuseHarness, _ func()) {
			dst, err := ParseAddr(d.dst)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Dial(ctxT(t), a.url, &DialOptions{Token: abuseToken, NetDialContext: dialerFrom(a.source()).DialContext})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			switch d.proto {
			case "tcp":
				_, err = s.OpenTCP(ctxT(t), dst)
			case "udp":
				_, err = s.OpenUDP(ctxT(t), dst)
			case "icmp":
				_, err = s.OpenICMP(ctxT(t), dst)
			}
			var se *StreamError
			if !errors.As(err, &se) || se.Code != wire.CodeDenied || !strings.Contains(se.Reason, d.reason) {
				t.Fatalf("open %s %s: %v; want DENIED with %q", d.proto, d.dst, err, d.reason)
			}
		})
	}
	add("destination name resolving to refused and allowed addresses", func(t *testing.T, a *abuseHarness, _ func()) {
		st, err := a.honest.OpenTCP(ctxT(t), wire.Addr{Name: "mixed.example", Port: a.echo.Port})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if got := st.LocalAddr().String(); got != a.echo.String() {
			t.Fatalf("connected to %s, want the allowed address %s", got, a.echo)
		}
	})
	return cases
}
