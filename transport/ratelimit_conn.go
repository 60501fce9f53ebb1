package transport

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
)

// connLimiter counts the connections that have not completed an authenticated
// upgrade, in total and per source, from the http.Server's ConnState events: a
// connection counts from StateNew until it is hijacked (the WebSocket upgrade, which
// Server does only after the token matched) or closed. A new connection beyond either
// cap is closed at once, before any byte of it is read.
type connLimiter struct {
	max, perSource int

	mu       sync.Mutex
	conns    map[net.Conn]netip.Prefix // counted connections and their source
	bySource map[netip.Prefix]int
	refused  uint64
}

func newConnLimiter(max, perSource int) *connLimiter {
	return &connLimiter{max: max, perSource: perSource, conns: make(map[net.Conn]netip.Prefix), bySource: make(map[netip.Prefix]int)}
}

// state is the http.Server ConnState hook.
func (l *connLimiter) state(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		if !l.admit(c) {
			_ = c.Close()
		}
	case http.StateHijacked, http.StateClosed:
		l.release(c)
	}
}

// admit counts c, or reports false when a cap is reached.
func (l *connLimiter) admit(c net.Conn) bool {
	src, _ := sourceOf(c.RemoteAddr().String()) // the zero Prefix: one shared source
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max || l.bySource[src] >= l.perSource {
		l.refused++
		return false
	}
	l.conns[c] = src
	l.bySource[src]++
	return true
}

func (l *connLimiter) release(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	src, ok := l.conns[c]
	if !ok {
		return // refused at StateNew, or already released
	}
	delete(l.conns, c)
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

// counts returns the connections counted now, the sources they come from, and how many
// connections were refused so far.
func (l *connLimiter) counts() (conns, sources int, refused uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), len(l.bySource), l.refused
}
