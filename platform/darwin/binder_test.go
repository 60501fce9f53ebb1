package darwin

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"
)

// bindRecorder records the socket options a Binder sets.
type bindRecorder struct {
	mu    sync.Mutex
	binds []string
}

func (b *bindRecorder) bind(_ uintptr, v6 bool, idx int) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	opt := "IP_BOUND_IF"
	if v6 {
		opt = "IPV6_BOUND_IF"
	}
	b.binds = append(b.binds, opt+"="+string(rune('0'+idx)))
	return nil
}

func (b *bindRecorder) last() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.binds) == 0 {
		return ""
	}
	return b.binds[len(b.binds)-1]
}

var testIfIndex = map[string]int{"en0": 4, "en5": 7, "en7": 9, "utun7": testTUNIndex}

func fakeIfIndex(name string) (int, error) {
	if i, ok := testIfIndex[name]; ok {
		return i, nil
	}
	return 0, errors.New("no such interface " + name)
}

// switchable answers `route -n get default` with the current default
// interface, which the test changes.
type switchable struct {
	mu     sync.Mutex
	iface  string // "" means no default route at all
	noIPv6 bool
}

func (s *switchable) set(iface string) {
	s.mu.Lock()
	s.iface = iface
	s.mu.Unlock()
}

func (s *switchable) respond(line, _ string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v6 := strings.Contains(line, "-inet6")
	if s.iface == "" || (v6 && s.noIPv6) {
		return nil, routeError(line, "not in table")
	}
	out := getDefault4
	if v6 {
		out = getDefault6
	}
	return []byte(strings.ReplaceAll(out, "en0", s.iface)), nil
}

func TestBinder(t *testing.T) {
	sw := &switchable{iface: "en0", noIPv6: true}
	rec := &bindRecorder{}
	b := NewBinder(BinderOptions{Ignore: testTUN, Logger: zaptest.NewLogger(t), Runner: &fakeRunner{respond: sw.respond}, ifIndex: fakeIfIndex, bind: rec.bind})

	// A real dial through the hook: the peer is a loopback listener.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &net.Dialer{Control: b.Control}
	if _, err := d.Dial("tcp4", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
		t.Fatalf("dial before Refresh: %v", err)
	}

	if changed, err := b.Refresh(context.Background()); err != nil || !changed {
		t.Fatalf("Refresh: %v, %v", changed, err)
	}
	if v4, v6 := b.Interfaces(); v4 != 4 || v6 != 0 {
		t.Errorf("interfaces %d, %d; want 4, 0", v4, v6)
	}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := rec.last(); got != "IP_BOUND_IF=4" {
		t.Errorf("bound %q, want IP_BOUND_IF=4", got)
	}
	if err := b.Control("tcp6", "[2001:db8::1]:443", nil); err == nil || !strings.Contains(err.Error(), "no IPv6 default route") {
		t.Errorf("IPv6 without a default route: %v", err)
	}

	// Nothing changed: no news.
	if changed, err := b.Refresh(context.Background()); err != nil || changed {
		t.Errorf("Refresh again: %v, %v", changed, err)
	}

	// The default moves to en5 (Ethernet plugged): the next dial uses it.
	sw.mu.Lock()
	sw.iface, sw.noIPv6 = "en5", false
	sw.mu.Unlock()
	if changed, err := b.Refresh(context.Background()); err != nil || !changed {
		t.Fatalf("Refresh: %v, %v", changed, err)
	}
	c, err = d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := rec.last(); got != "IP_BOUND_IF=7" {
		t.Errorf("bound %q, want IP_BOUND_IF=7", got)
	}
	if v4, v6 := b.Interfaces(); v4 != 7 || v6 != 7 {
		t.Errorf("interfaces %d, %d; want 7, 7", v4, v6)
	}

	// A default route through the tunnel itself is not an interface to
	// bind to.
	sw.set(testTUN)
	if _, err := b.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if v4, v6 := b.Interfaces(); v4 != 0 || v6 != 0 {
		t.Errorf("interfaces %d, %d with the default through the tunnel; want none", v4, v6)
	}
}

func TestBinderBindError(t *testing.T) {
	sw := &switchable{iface: "en0"}
	b := NewBinder(BinderOptions{Runner: &fakeRunner{respond: sw.respond}, ifIndex: fakeIfIndex,
		bind: func(uintptr, bool, int) error { return errors.New("EPERM") }})
	if _, err := b.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := &net.Dialer{Control: b.Control}
	if _, err := d.Dial("tcp4", ln.Addr().String()); err == nil || !strings.Contains(err.Error(), "EPERM") {
		t.Errorf("dial: %v", err)
	}
}
