//go:build linux

package linux

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Options are the dependencies of Up and Down.
type Options struct {
	// Handle is the netlink handle to configure through; nil means a new
	// handle in the current network namespace (closed again by Close or
	// Down). Tests pass a handle of a test namespace
	// (netlink.NewHandleAt). A caller's handle is never closed and must
	// stay open until Close returns.
	Handle *netlink.Handle
	// Logger receives what is changed and restored; nil discards it.
	Logger *zap.Logger

	// Seams for tests; the zero values are the real thing.
	run            runner                       // resolvectl; nil: os/exec
	resolvedActive func(resolvConf string) bool // nil: resolvedManages
	beforeStep     func(step string) error      // nil: none; an error fails Up before that step
}

// env is Options resolved.
type env struct {
	h              *netlink.Handle
	ownHandle      bool
	log            *zap.Logger
	run            runner
	resolvedActive func(string) bool
	beforeStep     func(string) error
}

func newEnv(o Options) (*env, error) {
	e := &env{h: o.Handle, log: o.Logger, run: o.run, resolvedActive: o.resolvedActive, beforeStep: o.beforeStep}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	e.log = e.log.Named("router")
	if e.run == nil {
		e.run = execRunner{timeout: 10 * time.Second}
	}
	if e.resolvedActive == nil {
		e.resolvedActive = resolvedManages
	}
	if e.h == nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		e.h, e.ownHandle = h, true
	}
	return e, nil
}

func (e *env) close() {
	if e.ownHandle {
		e.h.Close()
	}
}

// Router is an applied Config. Close restores what Up changed.
type Router struct {
	mu     sync.Mutex
	env    *env
	store  *journalStore
	j      *journal
	closed bool
	err    error // Close's result
}

// Up applies cfg: MTU, addresses and up state of the TUN, the routes of
// the private table, the policy rules and DNS, in that order.
//
// For a full tunnel it installs, with P = RulePriority, T = Table and
// M = FwMark (both families unless said otherwise):
//
//	table T:  default dev TUN (IPv4 and IPv6), or one route per Include
//	          prefix plus ::/0 when Include has no IPv6 prefix
//	P:        ipproto udp dport 53 lookup T
//	P:        ipproto tcp dport 53 lookup T
//	P:        to X lookup main                  (each Exclude prefix X)
//	P+1:      lookup main suppress_prefixlength 0   (LANBypass only)
//	P+2:      not fwmark M lookup T
//
// so that the tunnel's own marked socket is routed by the main table and
// cannot loop into the TUN, more specific LAN routes stay direct with
// LANBypass — except DNS, which never leaves outside the tunnel, not even
// to a resolver on the LAN or an excluded network — and everything else
// enters the TUN. (A peer listening on port 53 is not supported: its
// connection would be captured too.)
//
// Before the first change Up writes a journal (JournalDir/journal.json)
// saying what it is about to add; Close and Down undo exactly that. A
// journal left by a process that died is restored first. Up fails,
// changing nothing, if table T is not empty or another rule uses
// P..P+2. When any step fails, Up undoes what it did before returning the
// error.
func Up(cfg Config, opts Options) (r *Router, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e, err := newEnv(opts)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	store, err := openJournalStore(cfg.JournalDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			store.release()
		}
	}()
	if err := restoreStale(e, store); err != nil {
		return nil, err
	}

	j, err := plan(cfg, e)
	if err != nil {
		return nil, err
	}
	if err := store.write(j); err != nil {
		return nil, err
	}
	if err := apply(e, j); err != nil {
		lines, uerr := restore(e, j)
		for _, l := range lines {
			e.log.Info("rolled back", zap.String("change", l))
		}
		if uerr != nil {
			return nil, fmt.Errorf("configure %s: %w; undoing it failed too, the journal %s is kept for `tetherd down`: %w", cfg.TUN, err, store.path(), uerr)
		}
		if rerr := store.remove(); rerr != nil {
			return nil, fmt.Errorf("configure %s: %w (rolled back; %w)", cfg.TUN, err, rerr)
		}
		return nil, fmt.Errorf("configure %s: %w (rolled back)", cfg.TUN, err)
	}
	e.log.Info("network configured", zap.String("tun", j.TUN), zap.Int("table", j.Table),
		zap.Stringers("routes", j.Routes), zap.Int("rules", len(j.Rules)))
	return &Router{env: e, store: store, j: j}, nil
}

// Close restores everything Up changed (tolerating what is already gone,
// such as a TUN that was deleted), flushes the private table, removes the
// journal and releases the journal lock. It is idempotent: later calls
// return the first call's result. If restoring fails, the journal is kept
// so that Down can try again.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	lines, err := restore(r.env, r.j)
	for _, l := range lines {
		r.env.log.Info("restored", zap.String("change", l))
	}
	if err != nil {
		err = fmt.Errorf("restore network configuration of %s (journal %s kept for `tetherd down`): %w", r.j.TUN, r.store.path(), err)
	} else {
		err = r.store.remove()
	}
	r.err = errors.Join(err, r.store.release())
	r.env.close()
	return r.err
}

// Down restores the configuration recorded in the journal in journalDir
// (DefaultJournalDir if empty) by a process that is gone, e.g. killed with
// SIGKILL: it is `tetherd down` and crash recovery. It returns one
// human-readable line per thing restored or found already gone. Without a
// journal there is nothing to do: it returns nil, nil. It fails while the
// tetherd that wrote the journal still runs. On an error the journal is
// kept.
func Down(journalDir string, opts Options) (restored []string, err error) {
	if journalDir == "" {
		journalDir = DefaultJournalDir
	}
	if _, err := os.Lstat(journalDir); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	store, err := openJournalStore(journalDir)
	if err != nil {
		return nil, err
	}
	defer store.release()
	j, err := store.read()
	if err != nil || j == nil {
		return nil, err
	}
	e, err := newEnv(opts)
	if err != nil {
		return nil, err
	}
	defer e.close()
	restored = append(restored, fmt.Sprintf("journal of tetherd pid %d (%s, written %s)", j.PID, j.TUN, j.Created.Format(time.RFC3339)))
	lines, err := restore(e, j)
	restored = append(restored, lines...)
	if err != nil {
		return restored, fmt.Errorf("restore from journal %s (kept): %w", store.path(), err)
	}
	if err := store.remove(); err != nil {
		return restored, err
	}
	return append(restored, "removed journal "+store.path()), nil
}

// restoreStale restores a journal found by Up: its owner is dead, since
// the lock was free.
func restoreStale(e *env, store *journalStore) error {
	j, err := store.read()
	if err != nil || j == nil {
		return err
	}
	e.log.Warn("restoring the configuration left by a tetherd that did not stop cleanly", zap.Int("pid", j.PID), zap.String("journal", store.path()))
	lines, err := restore(e, j)
	for _, l := range lines {
		e.log.Info("restored", zap.String("change", l))
	}
	if err != nil {
		return fmt.Errorf("restore the configuration left by tetherd pid %d (journal %s): %w", j.PID, store.path(), err)
	}
	return store.remove()
}

// plan checks the system and returns the journal of the changes Up will
// make. It changes nothing.
func plan(cfg Config, e *env) (*journal, error) {
	link, err := e.h.LinkByName(cfg.TUN)
	if err != nil {
		return nil, fmt.Errorf("TUN %q: %w", cfg.TUN, err)
	}
	attrs := link.Attrs()

	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rules, err := retryDump(func() ([]netlink.Rule, error) { return e.h.RuleList(fam) })
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		for _, r := range rules {
			if r.Priority >= cfg.RulePriority && r.Priority <= cfg.RulePriority+2 {
				return nil, fmt.Errorf("rule priority %d is taken (%s): choose another RulePriority", r.Priority, formatRule(r))
			}
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return e.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: cfg.Table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return nil, fmt.Errorf("list table %d: %w", cfg.Table, err)
	}
	if len(routes) > 0 {
		return nil, fmt.Errorf("routing table %d is not empty (%d routes, e.g. %s): choose another Table", cfg.Table, len(routes), e.formatRoute(routes[0]))
	}

	j := &journal{
		Version:  journalVersion,
		PID:      os.Getpid(),
		Created:  time.Now().UTC().Truncate(time.Second),
		TUN:      cfg.TUN,
		TUNIndex: attrs.Index,
		SetUp:    attrs.Flags&net.FlagUp == 0,
		Table:    cfg.Table,
		Routes:   cfg.routes(),
		Rules:    planRules(cfg),
	}
	if cfg.MTU > 0 && cfg.MTU != attrs.MTU {
		j.MTU = &mtuChange{From: attrs.MTU, To: cfg.MTU}
	}
	have, err := retryDump(func() ([]netlink.Addr, error) { return e.h.AddrList(link, netlink.FAMILY_ALL) })
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", cfg.TUN, err)
	}
	for _, a := range cfg.Addrs {
		if slices.ContainsFunc(have, func(h netlink.Addr) bool { p, ok := prefixFromIPNet(h.IPNet); return ok && p == a }) {
			e.log.Info("address already present; leaving it", zap.String("tun", cfg.TUN), zap.Stringer("addr", a))
			continue
		}
		j.Addrs = append(j.Addrs, a)
	}
	if j.DNS, err = planDNS(cfg, e); err != nil {
		return nil, err
	}
	if j.DNS != nil && j.DNS.Mode == DNSResolvConf && len(j.DNS.Servers) > 3 {
		e.log.Warn("the C library reads only the first 3 nameserver lines", zap.Stringers("dns", j.DNS.Servers))
	}
	return j, nil
}

// step is one change of Up. When do fails, fallback (if set) may still
// handle the error: it returns nil if it did.
type step struct {
	name     string
	do       func() error
	fallback func(error) error
}

// ipv6Off reports whether err says that IPv6 is disabled on the device
// (EACCES, net.ipv6.conf.DEV.disable_ipv6=1) or not available at all
// (EAFNOSUPPORT, ipv6.disable=1).
func ipv6Off(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EAFNOSUPPORT)
}

// apply makes the changes of j in order; it stops at the first error.
func apply(e *env, j *journal) error {
	link, err := e.h.LinkByIndex(j.TUNIndex)
	if err != nil {
		return fmt.Errorf("TUN %s: %w", j.TUN, err)
	}
	var steps []step
	if j.MTU != nil {
		steps = append(steps, step{name: fmt.Sprintf("set MTU %d on %s", j.MTU.To, j.TUN), do: func() error { return e.h.LinkSetMTU(link, j.MTU.To) }})
	}
	if j.SetUp {
		steps = append(steps, step{name: "set " + j.TUN + " up", do: func() error { return e.h.LinkSetUp(link) }})
	}
	for _, a := range j.Addrs {
		addr := &netlink.Addr{IPNet: ipNet(a)} // a is the address itself, not masked
		if a.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // a TUN has no neighbours to collide with
		}
		st := step{name: fmt.Sprintf("add address %v to %s", a, j.TUN), do: func() error { return e.h.AddrAdd(link, addr) }}
		if a.Addr().Is6() {
			st.fallback = func(err error) error {
				if !ipv6Off(err) {
					return err
				}
				e.log.Warn("IPv6 is disabled on the TUN; not adding its IPv6 address", zap.String("tun", j.TUN), zap.Stringer("addr", a), zap.Error(err))
				return nil
			}
		}
		steps = append(steps, st)
	}
	for _, dst := range j.Routes {
		st := step{name: "add route " + routeString(dst, j.TUN, j.Table), do: func() error { return e.h.RouteAdd(tunnelRoute(dst, j.TUNIndex, j.Table)) }}
		if dst.Addr().Is6() {
			// IPv6 disabled on the TUN but maybe not on the uplink: block
			// IPv6 rather than let it leak past the tunnel.
			st.fallback = func(err error) error {
				switch {
				case errors.Is(err, unix.EAFNOSUPPORT):
					e.log.Warn("no IPv6 in the kernel; nothing to capture", zap.Stringer("dst", dst))
					return nil
				case !errors.Is(err, unix.EACCES):
					return err
				}
				e.log.Warn("IPv6 is disabled on the TUN; blocking IPv6 instead of tunnelling it", zap.String("tun", j.TUN), zap.Stringer("dst", dst))
				if err := e.h.RouteAdd(unreachableRoute(dst, j.Table)); err != nil {
					return fmt.Errorf("IPv6 is disabled on %s, and blocking IPv6 instead failed: %w", j.TUN, err)
				}
				return nil
			}
		}
		steps = append(steps, st)
	}
	for _, r := range j.Rules {
		st := step{name: "add rule " + r.String(), do: func() error { return e.h.RuleAdd(r.netlinkRule()) }}
		if r.Family == 6 {
			st.fallback = func(err error) error {
				if !errors.Is(err, unix.EAFNOSUPPORT) {
					return err
				}
				e.log.Warn("no IPv6 in the kernel; skipping the IPv6 rule", zap.Stringer("rule", r))
				return nil
			}
		}
		steps = append(steps, st)
	}
	if j.DNS != nil {
		steps = append(steps, step{name: "configure DNS (" + j.DNS.Mode + ")", do: func() error { return applyDNS(j.DNS, e) }})
	}
	for _, s := range steps {
		if e.beforeStep != nil {
			if err := e.beforeStep(s.name); err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
		}
		err := s.do()
		if err != nil && s.fallback != nil {
			err = s.fallback(err)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		e.log.Debug("changed", zap.String("change", s.name))
	}
	return nil
}

// restore undoes j in reverse order of apply: DNS, rules, the private
// table, addresses, up state, MTU. Things already gone are reported as
// such, not as errors; link settings are restored only on the link that j
// describes (same name and index), never on a new TUN of the same name.
// It carries on after an error and returns all errors joined.
func restore(e *env, j *journal) (lines []string, err error) {
	var errs []error
	fail := func(what string, err error) { errs = append(errs, fmt.Errorf("%s: %w", what, err)) }

	var link netlink.Link
	switch l, err := e.h.LinkByIndex(j.TUNIndex); {
	case err == nil && l.Attrs().Name == j.TUN:
		link = l
	case err == nil:
		lines = append(lines, fmt.Sprintf("%s (index %d) is gone, index %d is now %s: its addresses and routes went with it", j.TUN, j.TUNIndex, j.TUNIndex, l.Attrs().Name))
	case gone(err):
		msg := fmt.Sprintf("%s (index %d) is gone: its addresses and routes went with it", j.TUN, j.TUNIndex)
		if l, err := e.h.LinkByName(j.TUN); err == nil {
			msg += fmt.Sprintf("; the new %s (index %d) is left alone", j.TUN, l.Attrs().Index)
		}
		lines = append(lines, msg)
	default:
		fail("look up "+j.TUN, err)
	}

	if j.DNS != nil {
		l, err := restoreDNS(j.DNS, link != nil, e)
		lines = append(lines, l...)
		if err != nil {
			fail("DNS", err)
		}
	}

	for _, r := range slices.Backward(j.Rules) {
		switch err := e.h.RuleDel(r.netlinkRule()); {
		case err == nil:
			lines = append(lines, "removed rule "+r.String())
		case gone(err):
			lines = append(lines, "rule already gone: "+r.String())
		default:
			fail("remove rule "+r.String(), err)
		}
	}

	routes, err := retryDump(func() ([]netlink.Route, error) {
		return e.h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: j.Table}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		fail(fmt.Sprintf("list table %d", j.Table), err)
	}
	found := map[netip.Prefix]bool{}
	for _, rt := range routes {
		desc := e.formatRoute(rt)
		dst := routeDst(rt)
		ours := (rt.LinkIndex == j.TUNIndex || rt.Type == unix.RTN_UNREACHABLE) && slices.Contains(j.Routes, dst)
		switch err := e.h.RouteDel(&rt); {
		case err == nil && ours:
			found[dst] = true
			lines = append(lines, "removed route "+desc)
		case err == nil:
			lines = append(lines, "flushed route "+desc+" (not added by tetherd)")
		case gone(err):
		default:
			fail("remove route "+desc, err)
		}
	}
	if link != nil {
		for _, dst := range j.Routes {
			if !found[dst] {
				lines = append(lines, "route already gone: "+routeString(dst, j.TUN, j.Table))
			}
		}
	}

	if link != nil {
		for _, a := range slices.Backward(j.Addrs) {
			addr := &netlink.Addr{IPNet: ipNet(a)} // a is the address itself, not masked
			switch err := e.h.AddrDel(link, addr); {
			case err == nil:
				lines = append(lines, fmt.Sprintf("removed address %v from %s", a, j.TUN))
			case gone(err):
				lines = append(lines, fmt.Sprintf("address already gone: %v on %s", a, j.TUN))
			default:
				fail(fmt.Sprintf("remove address %v from %s", a, j.TUN), err)
			}
		}
		// The state of link is from before the addresses were removed,
		// which does not change its flags or MTU.
		if j.SetUp && link.Attrs().Flags&net.FlagUp != 0 {
			switch err := e.h.LinkSetDown(link); {
			case err == nil:
				lines = append(lines, "set "+j.TUN+" down again")
			case gone(err):
			default:
				fail("set "+j.TUN+" down", err)
			}
		}
		switch mtu := link.Attrs().MTU; {
		case j.MTU == nil || mtu == j.MTU.From:
		case mtu != j.MTU.To:
			lines = append(lines, fmt.Sprintf("MTU of %s left at %d: changed by something else since tetherd set %d", j.TUN, mtu, j.MTU.To))
		default:
			switch err := e.h.LinkSetMTU(link, j.MTU.From); {
			case err == nil:
				lines = append(lines, fmt.Sprintf("restored MTU %d on %s", j.MTU.From, j.TUN))
			case gone(err):
			default:
				fail(fmt.Sprintf("restore MTU %d on %s", j.MTU.From, j.TUN), err)
			}
		}
	}
	return lines, errors.Join(errs...)
}

// formatRoute formats a dumped route like `ip route`, with the table.
func (e *env) formatRoute(r netlink.Route) string {
	s := prefixString(routeDst(r))
	if r.Type == unix.RTN_UNREACHABLE {
		return "unreachable " + s + " table " + tableName(r.Table)
	}
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	if r.LinkIndex > 0 {
		if l, err := e.h.LinkByIndex(r.LinkIndex); err == nil {
			s += " dev " + l.Attrs().Name
		} else {
			s += fmt.Sprintf(" dev #%d", r.LinkIndex)
		}
	}
	return s + " table " + tableName(r.Table)
}
