package darwin

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// fakePF is the part of the fake Mac that pfctl changes: whether pf runs,
// the references (tokens) that keep it enabled, and the rulesets of the
// anchors under com.apple/, which the stock main ruleset evaluates. It
// also evaluates outgoing packets against those rules (the subset of pf's
// syntax that pfRules writes), so that tests can ask whether a DNS query
// leaves on a given interface.
type fakePF struct {
	running bool
	tokens  map[string]bool
	anchors map[string]string // anchor -> ruleset
	next    int
}

func (p *fakePF) state() []string {
	var out []string
	if p.running {
		out = append(out, "pf running")
	}
	for t := range p.tokens {
		out = append(out, "pf token "+t)
	}
	for a, r := range p.anchors {
		out = append(out, "pf anchor "+a+" = "+strings.Join(strings.Split(strings.TrimSpace(r), "\n"), "; "))
	}
	return out
}

// pfctl interprets the pfctl command lines that the router runs; line is
// the whole command for errors.
func (p *fakePF) pfctl(line string, args []string, stdin string) ([]byte, error) {
	fail := func(errno string) ([]byte, error) {
		return nil, &CommandError{Command: line, Err: errors.New("exit status 1"), Output: "pfctl: " + errno}
	}
	if p.tokens == nil {
		p.tokens = map[string]bool{}
	}
	if p.anchors == nil {
		p.anchors = map[string]string{}
	}
	switch {
	case slices.Equal(args, []string{"-E"}):
		p.next++
		t := strconv.Itoa(1000 + p.next)
		p.tokens[t] = true
		msg := "pf enabled"
		if p.running {
			msg = "pf already enabled"
		}
		p.running = true
		return []byte("No ALTQ support in kernel\nALTQ related functions disabled\n" + msg + "\nToken : " + t + "\n"), nil
	case len(args) == 2 && args[0] == "-X":
		// As DIOCSTOPREF in XNU's pf_ioctl.c.
		if !p.running {
			return fail("DIOCSTOPREF: No such file or directory")
		}
		if !p.tokens[args[1]] {
			return fail("DIOCSTOPREF: Invalid argument")
		}
		delete(p.tokens, args[1])
		if len(p.tokens) == 0 {
			p.running = false
			return []byte("pf disabled\n"), nil
		}
		return nil, nil
	case slices.Equal(args, []string{"-s", "rules"}):
		return []byte(pfctlMainRules), nil
	case len(args) == 4 && args[0] == "-a" && args[2] == "-f" && args[3] == "-":
		if !strings.HasPrefix(args[1], "com.apple/") {
			return nil, fmt.Errorf("fake pf: anchor %s would not be evaluated", args[1])
		}
		p.anchors[args[1]] = stdin
		return nil, nil
	case len(args) == 4 && args[0] == "-a" && slices.Equal(args[2:], []string{"-F", "rules"}):
		delete(p.anchors, args[1])
		return []byte("rules cleared\n"), nil
	}
	return nil, fmt.Errorf("fake pf: pfctl %v?", args)
}

// verdict says what pf does with a packet going out on ifname: "pass" or
// "block". Anchors are evaluated in name order, rules in order; the
// first quick rule that matches decides, and without one pf passes it
// (the stock ruleset has no block rule).
func (p *fakePF) verdict(ifname, proto string, dst netip.AddrPort) string {
	if !p.running {
		return "pass"
	}
	names := make([]string, 0, len(p.anchors))
	for a := range p.anchors {
		names = append(names, a)
	}
	sort.Strings(names)
	for _, a := range names {
		for line := range strings.Lines(p.anchors[a]) {
			r, err := parseFakeRule(line)
			if err != nil {
				panic(fmt.Sprintf("anchor %s: %v", a, err))
			}
			if r != nil && r.matches(ifname, proto, dst) {
				return r.action
			}
		}
	}
	return "pass"
}

// fakeRule is one rule of the form pfRules writes:
//
//	pass|block [return] out quick [on IF] proto P|{ P... } from any to any|ADDR port N|{ N... }
type fakeRule struct {
	action string
	on     string
	protos []string
	to     netip.Addr // invalid: any
	ports  []uint16
}

func parseFakeRule(line string) (*fakeRule, error) {
	f := strings.Fields(line)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return nil, nil
	}
	r := &fakeRule{action: f[0]}
	next := func() string {
		if len(f) == 0 {
			return ""
		}
		s := f[0]
		f = f[1:]
		return s
	}
	list := func() []string {
		if s := next(); s != "{" {
			return []string{s}
		}
		var out []string
		for s := next(); s != "}" && s != ""; s = next() {
			out = append(out, s)
		}
		return out
	}
	next()
	if r.action != "pass" && r.action != "block" {
		return nil, fmt.Errorf("action %q", r.action)
	}
	if len(f) > 0 && f[0] == "return" {
		next()
	}
	if next() != "out" || next() != "quick" {
		return nil, fmt.Errorf("want out quick: %q", line)
	}
	if len(f) > 0 && f[0] == "on" {
		next()
		r.on = next()
	}
	if next() != "proto" {
		return nil, fmt.Errorf("want proto: %q", line)
	}
	r.protos = list()
	if next() != "from" || next() != "any" || next() != "to" {
		return nil, fmt.Errorf("want from any to: %q", line)
	}
	if to := next(); to != "any" {
		a, err := netip.ParseAddr(to)
		if err != nil {
			return nil, err
		}
		r.to = a
	}
	if next() != "port" {
		return nil, fmt.Errorf("want port: %q", line)
	}
	for _, s := range list() {
		n, err := strconv.ParseUint(s, 10, 16)
		if err != nil {
			return nil, err
		}
		r.ports = append(r.ports, uint16(n))
	}
	if len(f) > 0 {
		return nil, fmt.Errorf("trailing %v: %q", f, line)
	}
	return r, nil
}

func (r *fakeRule) matches(ifname, proto string, dst netip.AddrPort) bool {
	return (r.on == "" || r.on == ifname) &&
		slices.Contains(r.protos, proto) &&
		(!r.to.IsValid() || r.to == dst.Addr()) &&
		slices.Contains(r.ports, dst.Port())
}
