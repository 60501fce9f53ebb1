package transport

import (
	"net/netip"
	"sync"
	"time"
)

// Defaults of the Server's abuse limits; a zero field of Server means these.
const (
	defaultAuthFailureBurst    = 5
	defaultAuthFailureInterval = 20 * time.Second
	defaultAuthSources         = 4096
	defaultMaxUnauthConns      = 64
	defaultMaxUnauthPerSource  = 8
	defaultMaxSessions         = 32
	defaultRelayBuffers        = 16 << 20
)

// The same defaults, for configuration files that print them.
const (
	DefaultAuthFailureBurst            = defaultAuthFailureBurst
	DefaultAuthFailureInterval         = defaultAuthFailureInterval
	DefaultMaxUnauthenticatedConns     = defaultMaxUnauthConns
	DefaultMaxUnauthenticatedPerSource = defaultMaxUnauthPerSource
	DefaultMaxSessions                 = defaultMaxSessions
	DefaultRelayBuffers                = defaultRelayBuffers
)

// sourceOf returns the key abuse limits are counted under: the address of an IPv4
// client, the /64 of an IPv6 one (a single host usually holds a whole /64, so counting
// per address would let it walk around every limit). ok is false when remote is not
// an IP address and port (a Unix socket, a test's fake address).
func sourceOf(remote string) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Prefix{}, false
	}
	ip := ap.Addr().Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32), true
	}
	p, _ := ip.Prefix(64)
	return p, true
}

// authLimiter counts failed authentications per source, as a token bucket of burst
// attempts refilled at one per interval. A source whose bucket is empty is refused
// before its token is looked at. The table holds at most max sources; a source that
// finds it full (after the sources whose bucket has refilled, which carry no state,
// were dropped) shares one overflow bucket with every other such source, so neither
// the table nor a crowd of addresses can be used to escape the limit.
type authLimiter struct {
	burst    float64
	interval time.Duration
	max      int
	now      func() time.Time

	mu        sync.Mutex
	sources   map[netip.Prefix]*bucket
	overflow  bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64 // failed attempts still allowed now
	last   time.Time
}

func newAuthLimiter(burst int, interval time.Duration, max int, now func() time.Time) *authLimiter {
	l := &authLimiter{burst: float64(burst), interval: interval, max: max, now: now, sources: make(map[netip.Prefix]*bucket)}
	l.overflow = bucket{tokens: l.burst, last: now()}
	return l
}

// refill brings b up to date at now.
func (l *authLimiter) refill(b *bucket, now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(l.burst, b.tokens+float64(d)/float64(l.interval))
	}
	b.last = now
}

// wait returns how long src must wait before its token may be checked; 0 means now.
func (l *authLimiter) wait(src netip.Prefix) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.sources[src]
	if !ok {
		if len(l.sources) < l.max {
			return 0
		}
		b = &l.overflow
	}
	l.refill(b, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.interval))
}

// fail records a failed attempt by src.
func (l *authLimiter) fail(src netip.Prefix) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.sources[src]
	if !ok {
		if len(l.sources) >= l.max && now.Sub(l.lastSweep) >= l.interval {
			l.sweepLocked(now)
		}
		if len(l.sources) < l.max {
			b = &bucket{tokens: l.burst, last: now}
			l.sources[src] = b
		} else {
			b = &l.overflow
		}
	}
	l.refill(b, now)
	b.tokens--
}

// succeed forgets src: it knows the token.
func (l *authLimiter) succeed(src netip.Prefix) {
	l.mu.Lock()
	delete(l.sources, src)
	l.mu.Unlock()
}

// sweepLocked drops the sources whose bucket has refilled: they are as good as new.
func (l *authLimiter) sweepLocked(now time.Time) {
	l.lastSweep = now
	for src, b := range l.sources {
		if l.refill(b, now); b.tokens >= l.burst {
			delete(l.sources, src)
		}
	}
}

// len returns how many sources the table holds.
func (l *authLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.sources)
}
