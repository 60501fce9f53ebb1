package darwin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Options are the dependencies of Up and Down.
type Options struct {
	// Logger receives what is changed and restored; nil discards it.
	Logger *zap.Logger
	// Runner runs route, ifconfig and scutil; nil means os/exec with a
	// timeout per command.
	Runner Runner

	// Seams for tests; the zero values are the real thing.
	ifIndex    func(name string) (int, error) // nil: net.InterfaceByName
	beforeStep func(step string) error        // nil: none; an error fails Up before that step
}

// env is Options resolved.
type env struct {
	ctx        context.Context
	log        *zap.Logger
	run        Runner
	ifIndex    func(string) (int, error)
	beforeStep func(string) error
}

func newEnv(o Options) *env {
	e := &env{ctx: context.Background(), log: o.Logger, run: o.Runner, ifIndex: o.ifIndex, beforeStep: o.beforeStep}
	if e.log == nil {
		e.log = zap.NewNop()
	}
	if e.run == nil {
		e.run = execRunner{timeout: commandTimeout}
	}
	if e.ifIndex == nil {
		e.ifIndex = func(name string) (int, error) {
			ifi, err := net.InterfaceByName(name)
			if err != nil {
				return 0, err
			}
			return ifi.Index, nil
		}
	}
	return e
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

// Up applies cfg with route(8), ifconfig(8), pfctl(8) and scutil(8), in this order
// (U is the utun, GW4 and GW6 the default gateways before Up):
//
//	ifconfig U mtu MTU
//	ifconfig U inet A A netmask M alias         (each IPv4 address A/M)
//	ifconfig U inet6 A prefixlen L alias        (each IPv6 address A/L)
//	ifconfig U up
//	route -n add -inet[6] NET -interface U      (the network of each address)
//	route -n add -inet[6] X GW4|GW6             (each Exclude prefix X)
//	route -n add -inet[6] P -interface U        (0.0.0.0/1, 128.0.0.0/1, ::/1,
//	                                             8000::/1, or the Include list)
//	pfctl -a PFAnchor -f - < rules              (DNS filter: see pfRules)
//	pfctl -E                                    (a reference on pf; its token
//	                                             is journaled for pfctl -X)
//	scutil < set DNSKey                         (DNS: see setDNSScript)
//
// (the DNS filter and DNS only with DNS servers and DNSMode not DNSOff),
// so that the exceptions are in place before anything is captured, and
// no query leaves outside the tunnel once the resolver points into it. The
// default routes themselves are left alone: the halves win by being more
// specific, and so does every route more specific than a half (the LAN).
// An Exclude prefix that such a route already covers (a peer on the LAN,
// or the gateway itself, as on a phone's hotspot) gets no route of its
// own: it is direct already.
//
// Before the first change Up writes a journal (JournalDir/journal.json)
// of what it is about to do; Close and Down undo exactly that, in reverse
// order. A journal left by a process that died is restored first. When a
// step fails, Up undoes the steps before it and returns the error.
func Up(cfg Config, opts Options) (r *Router, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := newEnv(opts)
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
	n, err := apply(e, store, j)
	if err != nil {
		lines, uerr := restore(e, j, j.Changes[:n], tunAlive)
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
	if cfg.dnsFilter() {
		checkPFAnchor(e)
	}
	e.log.Info("network configured", zap.String("tun", j.TUN), zap.Int("changes", len(j.Changes)))
	return &Router{env: e, store: store, j: j}, nil
}

// Close restores everything Up changed that still exists, removes the
// journal and releases its lock. Addresses of the utun are removed only
// while the utun Up configured still exists (same name and index); once it
// is closed they are gone with it, and so are its routes normally (any
// that outlived it are removed; see restore). Close is idempotent:
// later calls return the first call's result. If restoring fails, the
// journal is kept so that Down can try again.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return r.err
	}
	r.closed = true
	lines, err := restore(r.env, r.j, r.j.Changes, r.env.tunState(r.j, false))
	for _, l := range lines {
		r.env.log.Info("restored", zap.String("change", l))
	}
	if err != nil {
		err = fmt.Errorf("restore network configuration of %s (journal %s kept for `tetherd down`): %w", r.j.TUN, r.store.path(), err)
	} else {
		err = r.store.remove()
	}
	r.err = errors.Join(err, r.store.release())
	return r.err
}

// Down restores the configuration recorded in the journal in journalDir
// (see JournalDir) by a process that is gone, e.g. killed with SIGKILL:
// it is `tetherd down` and crash recovery. Its utun died with it, and
// the utun's addresses and routes with the utun, so Down undoes the rest:
// the Exclude routes, DNS, and utun routes that outlived the utun. It
// never touches another utun that took the same name. It returns one
// human-readable line per
// thing restored or found already gone; without a journal it returns
// nil, nil. It fails while the tetherd that wrote the journal still runs.
// On an error the journal is kept.
func Down(journalDir string, opts Options) (restored []string, err error) {
	journalDir = JournalDir(journalDir)
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
	e := newEnv(opts)
	restored = append(restored, fmt.Sprintf("journal of tetherd pid %d (%s, written %s)", j.PID, j.TUN, j.Created.Format(time.RFC3339)))
	lines, err := restore(e, j, j.Changes, e.tunState(j, true))
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
// the lock was free, and so is its utun.
func restoreStale(e *env, store *journalStore) error {
	j, err := store.read()
	if err != nil || j == nil {
		return err
	}
	e.log.Warn("restoring the configuration left by a tetherd that did not stop cleanly", zap.Int("pid", j.PID), zap.String("journal", store.path()))
	lines, err := restore(e, j, j.Changes, e.tunState(j, true))
	for _, l := range lines {
		e.log.Info("restored", zap.String("change", l))
	}
	if err != nil {
		return fmt.Errorf("restore the configuration left by tetherd pid %d (journal %s): %w", j.PID, store.path(), err)
	}
	return store.remove()
}

// plan reads the default routes and the routes of the Exclude prefixes
// and returns the journal of the changes Up will make. It changes
// nothing.
func plan(cfg Config, e *env) (*journal, error) {
	idx, err := e.ifIndex(cfg.TUN)
	if err != nil {
		return nil, fmt.Errorf("TUN %q: %w", cfg.TUN, err)
	}
	j := &journal{
		Version:  journalVersion,
		OS:       "darwin",
		PID:      os.Getpid(),
		Created:  time.Now().UTC().Truncate(time.Second),
		TUN:      cfg.TUN,
		TUNIndex: idx,
	}
	tun := cfg.TUN
	add := func(c change) { j.Changes = append(j.Changes, c) }
	route := func(args ...string) command { return command{Name: routeCmd, Args: append([]string{"-n"}, args...)} }
	ifconfig := func(args ...string) command { return command{Name: ifconfigCmd, Args: append([]string{tun}, args...)} }

	if cfg.MTU > 0 {
		add(change{What: fmt.Sprintf("MTU %d on %s", cfg.MTU, tun), Do: ifconfig("mtu", strconv.Itoa(cfg.MTU)), OnTUN: true})
	}
	for _, a := range cfg.Addrs {
		ip := a.Addr().String()
		if a.Addr().Is4() {
			mask := net.IP(net.CIDRMask(a.Bits(), 32)).String()
			// utun is point-to-point: the destination is the address
			// itself, and the route of the network is added below.
			undo := ifconfig("inet", ip, "-alias")
			add(change{What: fmt.Sprintf("address %v on %s", a, tun), Do: ifconfig("inet", ip, ip, "netmask", mask, "alias"), Undo: &undo, OnTUN: true})
		} else {
			undo := ifconfig("inet6", ip, "-alias")
			add(change{What: fmt.Sprintf("address %v on %s", a, tun), Do: ifconfig("inet6", ip, "prefixlen", strconv.Itoa(a.Bits()), "alias"), Undo: &undo, OnTUN: true})
		}
	}
	add(change{What: tun + " up", Do: ifconfig("up"), OnTUN: true})
	for _, a := range cfg.Addrs {
		if a.IsSingleIP() {
			continue
		}
		p := a.Masked()
		undo := route("delete", familyFlag(p.Addr().Is6()), p.String(), "-interface", tun)
		add(change{What: fmt.Sprintf("route %v into %s", p, tun), Do: route("add", familyFlag(p.Addr().Is6()), p.String(), "-interface", tun), Undo: &undo, OnTUN: true, ExistsOK: true})
	}

	gw4, err := defaultOutside(e, false, tun)
	if err != nil {
		return nil, err
	}
	gw6, err := defaultOutside(e, true, tun)
	if err != nil {
		return nil, err
	}
	e.log.Info("default routes before the tunnel", zap.Stringer("ipv4", gw4), zap.Stringer("ipv6", gw6))
	for _, x := range cfg.Exclude {
		gw := gw4
		if x.Addr().Is6() {
			gw = gw6
		}
		if gw == nil {
			e.log.Warn("no default route for this family: the excluded prefix is not routed around the tunnel", zap.Stringer("exclude", x))
			continue
		}
		ri, err := getRoute(e.ctx, e.run, x.Addr())
		if err != nil {
			return nil, fmt.Errorf("exclude %v: %w", x, err)
		}
		if ri != nil && ri.Dst.Bits() > 0 && ri.Dst.Bits() <= x.Bits() && ri.Interface != tun {
			e.log.Info("excluded prefix already routed directly; leaving it", zap.Stringer("exclude", x), zap.Stringer("route", ri.Dst), zap.String("interface", ri.Interface))
			continue
		}
		add(excludeChange(x, gw))
	}
	for _, p := range cfg.tunnelRoutes() {
		undo := route("delete", familyFlag(p.Addr().Is6()), p.String(), "-interface", tun)
		// An Include network that is routed already (the LAN itself, say)
		// stays as it is, as the LAN bypass would keep it on Linux; the
		// halves of a full tunnel must be tetherd's, or traffic would go
		// wherever the existing ones lead.
		half := slices.Contains(v4Halves, p) || slices.Contains(v6Halves, p)
		add(change{What: fmt.Sprintf("route %v into %s", p, tun), Do: route("add", familyFlag(p.Addr().Is6()), p.String(), "-interface", tun), Undo: &undo, OnTUN: true, ExistsOK: !half})
	}
	if cfg.dnsFilter() {
		// Before the resolver moves into the tunnel: from now on no query
		// leaves outside it, scoped (mDNSResponder's per-interface
		// resolvers) or sent straight to the LAN's resolver.
		for _, c := range pfChanges(tun, cfg.Peers) {
			add(c)
		}
		undo := command{Name: scutilCmd, Stdin: removeDNSScript()}
		add(change{What: fmt.Sprintf("DNS servers %v as the default resolver (%s)", cfg.DNS, DNSKey), Do: command{Name: scutilCmd, Stdin: setDNSScript(cfg.DNS)}, Undo: &undo})
	}
	return j, nil
}

// excludeChange is the route of the Exclude prefix x through gw.
func excludeChange(x netip.Prefix, gw *defaultRoute) change {
	fam := familyFlag(x.Addr().Is6())
	via := []string{"-interface", gw.Interface}
	if gw.Gateway.IsValid() {
		via = []string{gw.Gateway.String()}
	}
	undo := command{Name: routeCmd, Args: slices.Concat([]string{"-n", "delete", fam, x.String()}, via)}
	return change{
		What:    fmt.Sprintf("route %v %s (excluded)", x, gw),
		Do:      command{Name: routeCmd, Args: slices.Concat([]string{"-n", "add", fam, x.String()}, via)},
		Undo:    &undo,
		Exclude: x,
	}
}

// Refresh follows a change of the default gateway (another Wi-Fi, the
// hotspot back with another address): it moves the Exclude routes to the
// new gateway of their family, or removes them while the family has no
// default route (and adds them again once it has). Each move deletes the
// old route, records the new one in the journal, then adds it, so that
// the journal never misses a route of tetherd's. WatchNetwork's Refresh
// hook calls it on every network change; it does nothing when the
// gateways did not change, or after Close.
func (r *Router) Refresh(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	e := *r.env
	e.ctx = ctx
	var gws [2]*defaultRoute
	for i, v6 := range []bool{false, true} {
		gw, err := defaultOutside(&e, v6, r.j.TUN)
		if err != nil {
			return err
		}
		gws[i] = gw
	}
	var errs []error
	for i := range r.j.Changes {
		c := &r.j.Changes[i]
		if !c.Exclude.IsValid() {
			continue
		}
		gw := gws[0]
		if c.Exclude.Addr().Is6() {
			gw = gws[1]
		}
		var next change
		if gw != nil {
			next = excludeChange(c.Exclude, gw)
		}
		if c.Undo != nil && gw != nil && slices.Equal(next.Do.Args, c.Do.Args) {
			continue // unchanged
		}
		if c.Undo != nil {
			if err := runCommand(&e, *c.Undo); err != nil && !alreadyGone(err) {
				errs = append(errs, fmt.Errorf("move %s: %w", c.What, err))
				continue
			}
			e.log.Info("removed", zap.String("change", c.What))
			c.Undo = nil
		}
		if gw == nil {
			e.log.Warn("no default route for this family any more: the excluded prefix follows the tunnel routes until there is one", zap.Stringer("exclude", c.Exclude))
		} else {
			*c = next
		}
		if err := r.store.write(r.j); err != nil {
			errs = append(errs, err)
			break
		}
		if gw == nil {
			continue
		}
		switch err := runCommand(&e, c.Do); {
		case err == nil:
			e.log.Info("added", zap.String("change", c.What))
		case routeExists(err):
			// Someone else's route: it is not for tetherd to remove.
			e.log.Info("routed already; leaving that route alone", zap.String("change", c.What))
			c.Undo = nil
			if err := r.store.write(r.j); err != nil {
				errs = append(errs, err)
			}
		default:
			errs = append(errs, fmt.Errorf("%s: %w", c.What, err))
		}
	}
	return errors.Join(errs...)
}

// defaultOutside returns the default route of a family, unless it goes
// through tun (a leftover): nil then, as when there is none.
func defaultOutside(e *env, v6 bool, tun string) (*defaultRoute, error) {
	d, err := getDefaultRoute(e.ctx, e.run, v6)
	if err != nil {
		return nil, fmt.Errorf("read the default route: %w", err)
	}
	if d != nil && d.Interface == tun {
		return nil, nil
	}
	return d, nil
}

// apply makes the changes of j in order and returns how many it made; it
// stops at the first error. A route that exists already where the change
// allows it is left alone: the change is marked skipped and the journal
// rewritten, so that nothing undoes a route tetherd did not add.
func apply(e *env, store *journalStore, j *journal) (int, error) {
	for i := range j.Changes {
		c := &j.Changes[i]
		if e.beforeStep != nil {
			if err := e.beforeStep(c.What); err != nil {
				return i, fmt.Errorf("%s: %w", c.What, err)
			}
		}
		if c.PFEnable {
			if err := pfEnable(e, store, j, c); err != nil {
				// The reference may be held (a token printed, the journal
				// not written): the change counts as made, so that a
				// rollback gives back what it can.
				return i + 1, fmt.Errorf("%s: %w", c.What, err)
			}
			continue
		}
		err := runCommand(e, c.Do)
		if err != nil && c.ExistsOK && routeExists(err) {
			e.log.Info("routed already; leaving that route alone", zap.String("change", c.What))
			c.Undo = nil
			if err := store.write(j); err != nil {
				return i, err
			}
			continue
		}
		if err != nil && routeExists(err) {
			return i, fmt.Errorf("%s: the route exists already, not added by this tetherd (another VPN? see netstat -rn): %w", c.What, err)
		}
		if err != nil {
			return i, fmt.Errorf("%s: %w", c.What, err)
		}
		e.log.Debug("changed", zap.String("change", c.What))
	}
	return len(j.Changes), nil
}

// pfEnable runs pfctl -E (change c of j), records the pfctl -X of the
// token it printed as c's undo, and journals it. A crash between the two
// leaves pf enabled by one reference that no journal names (see
// docs/macos.md); the anchor itself is journaled before it is loaded.
func pfEnable(e *env, store *journalStore, j *journal, c *change) error {
	out, err := e.run.Run(e.ctx, c.Do.Stdin, c.Do.Name, c.Do.Args...)
	if err != nil {
		return err
	}
	token, err := parsePFToken(out)
	if err != nil {
		e.log.Error("pf is enabled with a reference tetherd cannot give back; see `sudo pfctl -s References`", zap.Error(err))
		return err
	}
	undo := pfReleaseCommand(token)
	c.Undo = &undo
	if err := store.write(j); err != nil {
		return err
	}
	e.log.Debug("changed", zap.String("change", c.What), zap.String("pf_token", token))
	return nil
}

// checkPFAnchor warns when pf's main ruleset does not evaluate the
// anchors under com.apple/ (a replaced /etc/pf.conf): the DNS filter is
// loaded then, but applies to nothing.
func checkPFAnchor(e *env) {
	out, err := e.run.Run(e.ctx, "", pfctlCmd, "-s", "rules")
	switch {
	case err != nil:
		e.log.Warn("cannot read pf's main ruleset; check that it has anchor \"com.apple/*\"", zap.Error(err))
	case !pfAnchorEvaluated(out):
		e.log.Warn("pf's main ruleset has no anchor \"com.apple/*\" (was /etc/pf.conf replaced?): the DNS filter " + PFAnchor + " is loaded but not applied, and DNS can leak to the LAN's resolver")
	}
}

// tunState says what became of the utun of a journal.
type tunState int

const (
	tunAlive    tunState = iota // the utun Up configured
	tunGone                     // no interface of that name
	tunReplaced                 // another utun of that name: another process's
)

// tunState looks the journal's utun up. ownerDead says that the process
// that created it is gone, and its utun with it: an interface of that
// name is then another one even with the same index (indexes are reused).
func (e *env) tunState(j *journal, ownerDead bool) tunState {
	idx, err := e.ifIndex(j.TUN)
	switch {
	case err != nil:
		return tunGone
	case idx != j.TUNIndex || ownerDead:
		return tunReplaced
	}
	return tunAlive
}

// restore undoes changes of j in reverse order. Changes on the utun are
// undone only while it is the utun of j; when it is gone, its routes
// are checked (`route -n get` of the exact prefix) and removed only if
// they outlived it, and when its name belongs to another utun, they are
// left alone. Things already gone are reported as such, not as errors.
// It carries on after an error and returns all errors joined.
func restore(e *env, j *journal, changes []change, tun tunState) (lines []string, err error) {
	var errs []error
	switch tun {
	case tunGone:
		lines = append(lines, j.TUN+" is gone, and its addresses with it")
	case tunReplaced:
		lines = append(lines, j.TUN+" is gone; the interface of that name now is another one, whose routes are left alone")
	}
	for _, c := range slices.Backward(changes) {
		if c.Undo == nil {
			continue
		}
		if c.OnTUN && tun != tunAlive {
			if tun == tunReplaced || c.Undo.Name != routeCmd {
				continue
			}
			switch left, err := routeLeft(e, *c.Undo, j.TUN); {
			case err != nil:
				errs = append(errs, fmt.Errorf("check %s: %w", c.What, err))
				continue
			case !left:
				continue // went with the utun
			}
		}
		switch err := runCommand(e, *c.Undo); {
		case err == nil:
			lines = append(lines, "removed "+c.What)
		case alreadyGone(err):
			lines = append(lines, "already gone: "+c.What)
		default:
			errs = append(errs, fmt.Errorf("undo %s: %w", c.What, err))
		}
	}
	return lines, errors.Join(errs...)
}

// routeLeft reports whether the route that the route delete command del
// removes is still there, through the interface tun, after that interface
// was destroyed. It asks `route -n get` for the exact prefix, which the
// command names after "delete" and its family flag.
func routeLeft(e *env, del command, tun string) (bool, error) {
	i := slices.Index(del.Args, "delete")
	if i < 0 || i+2 >= len(del.Args) {
		return false, fmt.Errorf("not a route delete: %s", del)
	}
	fam, dst := del.Args[i+1], del.Args[i+2]
	out, err := runRoute(e.ctx, e.run, "-n", "get", fam, dst)
	if notInTable(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p, perr := netip.ParsePrefix(dst)
	ri, err := parseRouteInfo(out, fam == "-inet6")
	if perr != nil || err != nil {
		return false, errors.Join(perr, err)
	}
	return ri.Dst == p && ri.Interface == tun, nil
}

// runCommand runs c and turns what route and scutil print about failures
// into errors.
func runCommand(e *env, c command) error {
	switch c.Name {
	case routeCmd:
		_, err := runRoute(e.ctx, e.run, c.Args...)
		return err
	case scutilCmd:
		out, err := e.run.Run(e.ctx, c.Stdin, c.Name, c.Args...)
		if err != nil {
			return err
		}
		if line, failed := scutilFailed(out); failed {
			return &CommandError{Command: c.Name, Err: errScutil, Output: line}
		}
		return nil
	default:
		_, err := e.run.Run(e.ctx, c.Stdin, c.Name, c.Args...)
		return err
	}
}

var errScutil = errors.New("scutil reported a failure")

// alreadyGone reports whether err says that the thing to remove does not
// exist (any more): a route not in the table, an address not assigned
// (EADDRNOTAVAIL), an interface that no longer exists, a dynamic store key
// that is not there.
func alreadyGone(err error) bool {
	if notInTable(err) || pfTokenGone(err) {
		return true
	}
	var ce *CommandError
	if !errors.As(err, &ce) {
		return false
	}
	for _, s := range []string{"Can't assign requested address", "does not exist", "No such key", "no such key"} {
		if strings.Contains(ce.Output, s) {
			return true
		}
	}
	return false
}
