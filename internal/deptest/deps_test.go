// Package deptest enforces the import layering of the tetherd module. It has
// no code of its own, only tests:
//
//   - TestImportRules lists every package of the module with
//     `go list -deps -f '{{.ImportPath}} {{.Standard}} ...' ./...` (for linux
//     and for darwin) and checks the rules below against each package's
//     transitive, non-test dependencies;
//   - the other tests check the rule checker itself on fake dependency lists,
//     so that a broken rule cannot silently pass.
//
// The rules (M is github.com/tetherd/tetherd, "X/..." means X and its
// subpackages):
//
//  1. M/netstack/... must not depend on M/transport/...
//  2. M/transport/... must not depend on M/netstack/...
//  3. M/transport/wire/... depends on the standard library only (and on
//     M/transport/wire/... itself).
//  4. Nothing but M/cmd/tetherd/... may depend on M/platform/... (the
//     platform packages may of course import each other).
//  5. M/daemon/..., M/netstack/... and M/transport/... must not depend on
//     M/cmd/...
//
// A rule whose packages do not exist (yet) is skipped; the test fails if none
// of netstack, transport, transport/wire, platform, cmd/tetherd, daemon
// exists, because then it would check nothing.
package deptest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

const modulePath = "github.com/tetherd/tetherd"

// pkgInfo is one package as reported by go list.
type pkgInfo struct {
	Path     string
	Standard bool
	Imports  []string // direct imports
	Deps     []string // transitive dependencies, excluding the package itself
}

// graph maps import paths to packages.
type graph map[string]*pkgInfo

// rule is one import rule.
type rule struct {
	Name string
	// Requires lists package roots; the rule is applied only when the module
	// has at least one package within one of them.
	Requires []string
	// Subject reports whether the module package pkg is subject to the rule.
	Subject func(pkg string) bool
	// Forbidden reports whether a subject package may not depend on dep.
	Forbidden func(dep *pkgInfo) bool
}

type violation struct {
	Rule  string
	Pkg   string
	Dep   string
	Chain []string // an import chain from Pkg to Dep
}

func (v violation) String() string {
	return fmt.Sprintf("%s: %s depends on %s (via %s)", v.Rule, v.Pkg, v.Dep, strings.Join(v.Chain, " -> "))
}

// within reports whether pkg is root or one of its subpackages.
func within(pkg, root string) bool {
	return pkg == root || strings.HasPrefix(pkg, root+"/")
}

func withinAny(pkg string, roots ...string) bool {
	for _, r := range roots {
		if within(pkg, r) {
			return true
		}
	}
	return false
}

// guardRoots are the packages the rules are about; at least one must exist.
func guardRoots(mod string) []string {
	return []string{
		mod + "/netstack",
		mod + "/transport",
		mod + "/transport/wire",
		mod + "/platform",
		mod + "/cmd/tetherd",
		mod + "/daemon",
	}
}

// rules returns the import rules of module mod.
func rules(mod string) []rule {
	var (
		netstack   = mod + "/netstack"
		transport  = mod + "/transport"
		wire       = mod + "/transport/wire"
		platform   = mod + "/platform"
		cmd        = mod + "/cmd"
		cmdTetherd = mod + "/cmd/tetherd"
		daemon     = mod + "/daemon"
	)
	return []rule{
		{
			Name:      "netstack must not depend on transport",
			Requires:  []string{netstack},
			Subject:   func(p string) bool { return within(p, netstack) },
			Forbidden: func(d *pkgInfo) bool { return within(d.Path, transport) },
		},
		{
			Name:      "transport must not depend on netstack",
			Requires:  []string{transport},
			Subject:   func(p string) bool { return within(p, transport) },
			Forbidden: func(d *pkgInfo) bool { return within(d.Path, netstack) },
		},
		{
			Name:      "transport/wire depends on the standard library only",
			Requires:  []string{wire},
			Subject:   func(p string) bool { return within(p, wire) },
			Forbidden: func(d *pkgInfo) bool { return !d.Standard && !within(d.Path, wire) },
		},
		{
			Name:      "only cmd/tetherd may depend on platform",
			Requires:  []string{platform},
			Subject:   func(p string) bool { return !withinAny(p, cmdTetherd, platform) },
			Forbidden: func(d *pkgInfo) bool { return within(d.Path, platform) },
		},
		{
			Name:      "daemon, netstack and transport must not depend on cmd",
			Requires:  []string{daemon, netstack, transport},
			Subject:   func(p string) bool { return withinAny(p, daemon, netstack, transport) },
			Forbidden: func(d *pkgInfo) bool { return within(d.Path, cmd) },
		},
	}
}

// applies reports whether r applies to a module made of pkgs.
func applies(r rule, pkgs []string) bool {
	for _, p := range pkgs {
		if withinAny(p, r.Requires...) {
			return true
		}
	}
	return false
}

// checkRule returns the violations of r by the module packages pkgs in g.
func checkRule(r rule, pkgs []string, g graph) ([]violation, error) {
	var out []violation
	for _, p := range pkgs {
		if !r.Subject(p) {
			continue
		}
		info := g[p]
		if info == nil {
			return nil, fmt.Errorf("package %s missing from the dependency graph", p)
		}
		for _, d := range info.Deps {
			if d == p {
				continue
			}
			dep := g[d]
			if dep == nil {
				return nil, fmt.Errorf("dependency %s of %s missing from the dependency graph", d, p)
			}
			if r.Forbidden(dep) {
				out = append(out, violation{Rule: r.Name, Pkg: p, Dep: d, Chain: importChain(g, p, d)})
			}
		}
	}
	return out, nil
}

// checkAll applies every applicable rule and returns the names of the rules
// applied and all violations.
func checkAll(rs []rule, pkgs []string, g graph) (applied []string, vs []violation, err error) {
	for _, r := range rs {
		if !applies(r, pkgs) {
			continue
		}
		applied = append(applied, r.Name)
		v, err := checkRule(r, pkgs, g)
		if err != nil {
			return nil, nil, err
		}
		vs = append(vs, v...)
	}
	return applied, vs, nil
}

// importChain returns a shortest import chain from -> ... -> to, or just
// [from, to] if none is found.
func importChain(g graph, from, to string) []string {
	prev := map[string]string{from: ""}
	queue := []string{from}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == to {
			var chain []string
			for p := to; p != ""; p = prev[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			return chain
		}
		if info := g[cur]; info != nil {
			for _, next := range info.Imports {
				if _, seen := prev[next]; !seen {
					prev[next] = cur
					queue = append(queue, next)
				}
			}
		}
	}
	return []string{from, to}
}

// listFormat is the go list -f template parsed by parseList: import path,
// Standard, direct imports, transitive deps, separated by tabs.
const listFormat = "{{.ImportPath}}\t{{.Standard}}\t{{join .Imports \" \"}}\t{{join .Deps \" \"}}"

func parseList(out []byte) (graph, error) {
	g := graph{}
	for _, line := range strings.Split(string(out), "\n") {
		// Only the newline is trimmed: trailing tabs are empty fields.
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		f := strings.Split(line, "\t")
		if len(f) != 4 {
			return nil, fmt.Errorf("unexpected go list line %q", line)
		}
		var std bool
		switch f[1] {
		case "true":
			std = true
		case "false":
		default:
			return nil, fmt.Errorf("unexpected Standard value in go list line %q", line)
		}
		g[f[0]] = &pkgInfo{Path: f[0], Standard: std, Imports: strings.Fields(f[2]), Deps: strings.Fields(f[3])}
	}
	return g, nil
}

// goCmd runs go with args in dir with extra environment and returns stdout.
func goCmd(t *testing.T, dir string, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go %s (env %v) in %s: %v\n%s", strings.Join(args, " "), env, dir, err, stderr.String())
	}
	return out
}

// moduleRoot returns the directory of the module's go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	gomod := strings.TrimSpace(string(goCmd(t, ".", nil, "env", "GOMOD")))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside a module", gomod)
	}
	return filepath.Dir(gomod)
}

func TestImportRules(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("go command not found: %v", err)
	}
	root := moduleRoot(t)
	if mod := strings.TrimSpace(string(goCmd(t, root, nil, "list", "-m", "-f", "{{.Path}}"))); mod != modulePath {
		t.Fatalf("module path is %q, want %q", mod, modulePath)
	}

	configs := []struct {
		name string
		env  []string
	}{
		{"linux", []string{"GOOS=linux"}},
		{"darwin", []string{"GOOS=darwin", "CGO_ENABLED=0"}},
	}
	// Packages per configuration; a package may exist for one GOOS only.
	pkgsFor := make([][]string, len(configs))
	var present []string
	for i, c := range configs {
		pkgsFor[i] = strings.Fields(string(goCmd(t, root, c.env, "list", "./...")))
		for _, r := range guardRoots(modulePath) {
			for _, p := range pkgsFor[i] {
				if within(p, r) && !slices.Contains(present, r) {
					present = append(present, r)
				}
			}
		}
	}
	if len(present) == 0 {
		t.Fatalf("none of %v exists: the import rules would check nothing", guardRoots(modulePath))
	}
	t.Logf("rule packages present: %v", present)

	for i, c := range configs {
		pkgs := pkgsFor[i]
		t.Run(c.name, func(t *testing.T) {
			g, err := parseList(goCmd(t, root, c.env, "list", "-deps", "-f", listFormat, "./..."))
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rules(modulePath) {
				t.Run(r.Name, func(t *testing.T) {
					if !applies(r, pkgs) {
						t.Skipf("no package within %v", r.Requires)
					}
					vs, err := checkRule(r, pkgs, g)
					if err != nil {
						t.Fatal(err)
					}
					for _, v := range vs {
						t.Error(v)
					}
				})
			}
		})
	}
}

// --- tests of the checker itself, on fake dependency lists ---

const m = modulePath

// fake builds a graph from direct imports; stdlib packages are those
// without a dot in their first path element, as in the real world.
func fake(imports map[string][]string) graph {
	g := graph{}
	var add func(p string) *pkgInfo
	add = func(p string) *pkgInfo {
		if info := g[p]; info != nil {
			return info
		}
		first, _, _ := strings.Cut(p, "/")
		info := &pkgInfo{Path: p, Standard: !strings.Contains(first, "."), Imports: imports[p]}
		g[p] = info
		seen := map[string]bool{}
		for _, d := range imports[p] {
			seen[d] = true
			for _, dd := range add(d).Deps {
				seen[dd] = true
			}
		}
		for d := range seen {
			info.Deps = append(info.Deps, d)
		}
		sort.Strings(info.Deps)
		return info
	}
	for p := range imports {
		add(p)
	}
	return g
}

// modulePkgs returns the module's packages in g, sorted.
func modulePkgs(g graph) []string {
	var out []string
	for p := range g {
		if within(p, m) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// cleanImports is a well-layered fake module.
func cleanImports() map[string][]string {
	return map[string][]string{
		m + "/cmd/tetherd":                    {m + "/daemon", m + "/platform", m + "/platform/linux", "fmt"},
		m + "/cmd/tetherd/internal":           {m + "/platform/darwin"},
		m + "/cmd/tetherctl":                  {m + "/daemon"},
		m + "/daemon":                         {m + "/netstack", m + "/transport", "context"},
		m + "/netstack":                       {m + "/netstack/tcp", "gvisor.dev/gvisor/pkg/tcpip", "net/netip"},
		m + "/netstack/tcp":                   {"sync"},
		m + "/transport":                      {m + "/transport/wire", "github.com/coder/websocket"},
		m + "/transport/wire":                 {m + "/transport/wire/internal/varint", "encoding/binary", "errors"},
		m + "/transport/wire/internal/varint": {"math/bits"},
		m + "/transportx":                     {m + "/netstack"}, // not transport: no violation
		m + "/platform":                       {"net/netip"},
		m + "/platform/linux":                 {m + "/platform", "golang.org/x/sys/unix"},
		m + "/platform/darwin":                {m + "/platform"},
		m + "/internal/deptest":               {"testing"},
		"gvisor.dev/gvisor/pkg/tcpip":         {"golang.org/x/sys/unix"},
		"github.com/coder/websocket":          {"net/http"},
	}
}

func withImports(base map[string][]string, pkg string, extra ...string) map[string][]string {
	out := map[string][]string{}
	for k, v := range base {
		out[k] = slices.Clone(v)
	}
	out[pkg] = append(out[pkg], extra...)
	return out
}

func TestCheckerCleanModule(t *testing.T) {
	g := fake(cleanImports())
	applied, vs, err := checkAll(rules(m), modulePkgs(g), g)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != len(rules(m)) {
		t.Errorf("applied %d rules %v, want all %d", len(applied), applied, len(rules(m)))
	}
	for _, v := range vs {
		t.Errorf("unexpected violation: %v", v)
	}
}

func TestCheckerCatchesEachRule(t *testing.T) {
	rs := rules(m)
	cases := []struct {
		name      string
		pkg       string
		imports   []string
		wantRule  string
		wantDeps  []string // forbidden deps expected to be reported for pkg
		wantChain []string // chain expected for the first reported dep, if set
	}{
		{
			name: "netstack imports transport", pkg: m + "/netstack", imports: []string{m + "/transport"},
			wantRule: rs[0].Name, wantDeps: []string{m + "/transport", m + "/transport/wire", m + "/transport/wire/internal/varint"},
		},
		{
			name: "netstack subpackage imports transport/wire", pkg: m + "/netstack/tcp", imports: []string{m + "/transport/wire"},
			wantRule: rs[0].Name, wantDeps: []string{m + "/transport/wire", m + "/transport/wire/internal/varint"},
		},
		{
			name: "netstack reaches transport indirectly", pkg: m + "/netstack", imports: []string{m + "/internal/glue"},
			wantRule: rs[0].Name, wantDeps: []string{m + "/transport/wire", m + "/transport/wire/internal/varint"},
			wantChain: []string{m + "/netstack", m + "/internal/glue", m + "/transport/wire"},
		},
		{
			name: "transport imports netstack", pkg: m + "/transport", imports: []string{m + "/netstack/tcp"},
			wantRule: rs[1].Name, wantDeps: []string{m + "/netstack/tcp"},
		},
		{
			name: "wire imports a third-party module", pkg: m + "/transport/wire", imports: []string{"golang.org/x/crypto/chacha20"},
			wantRule: rs[2].Name, wantDeps: []string{"golang.org/x/crypto/chacha20"},
		},
		{
			name: "wire subpackage imports a module package", pkg: m + "/transport/wire/internal/varint", imports: []string{m + "/internal/bitsutil"},
			wantRule: rs[2].Name, wantDeps: []string{m + "/internal/bitsutil"},
		},
		{
			name: "daemon imports platform", pkg: m + "/daemon", imports: []string{m + "/platform/linux"},
			wantRule: rs[3].Name, wantDeps: []string{m + "/platform", m + "/platform/linux"},
		},
		{
			name: "another command imports platform", pkg: m + "/cmd/tetherctl", imports: []string{m + "/platform"},
			wantRule: rs[3].Name, wantDeps: []string{m + "/platform"},
		},
		{
			name: "transport imports cmd", pkg: m + "/transport", imports: []string{m + "/cmd/tetherctl"},
			wantRule: rs[4].Name, wantDeps: []string{m + "/cmd/tetherctl"},
		},
		{
			name: "daemon subpackage imports cmd/tetherd subpackage", pkg: m + "/daemon/api", imports: []string{m + "/cmd/tetherd/internal"},
			wantRule: rs[4].Name, wantDeps: []string{m + "/cmd/tetherd/internal"},
		},
	}
	caught := map[string]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			imports := withImports(cleanImports(), m+"/internal/glue", m+"/transport/wire")
			imports = withImports(imports, tc.pkg, tc.imports...)
			g := fake(imports)
			_, vs, err := checkAll(rs, modulePkgs(g), g)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range vs {
				if v.Rule == tc.wantRule && v.Pkg == tc.pkg {
					got = append(got, v.Dep)
				}
			}
			sort.Strings(got)
			if !reflect.DeepEqual(got, tc.wantDeps) {
				t.Errorf("rule %q on %s reported deps %v, want %v (all violations: %v)", tc.wantRule, tc.pkg, got, tc.wantDeps, vs)
			}
			if tc.wantChain != nil {
				for _, v := range vs {
					if v.Rule == tc.wantRule && v.Pkg == tc.pkg && v.Dep == tc.wantChain[len(tc.wantChain)-1] {
						if !reflect.DeepEqual(v.Chain, tc.wantChain) {
							t.Errorf("chain %v, want %v", v.Chain, tc.wantChain)
						}
					}
				}
			}
			if len(got) > 0 {
				caught[tc.wantRule] = true
			}
		})
	}
	for _, r := range rs {
		if !caught[r.Name] {
			t.Errorf("rule %q caught no violation in any case: it is untested or broken", r.Name)
		}
	}
}

func TestCheckerAllowed(t *testing.T) {
	// Edges that look close to forbidden ones but are allowed.
	allowed := []struct{ pkg, imp string }{
		{m + "/cmd/tetherd", m + "/platform/linux"},
		{m + "/cmd/tetherd/internal", m + "/platform"},
		{m + "/platform/linux", m + "/platform/darwin"},
		{m + "/transport/wire", m + "/transport/wire/internal/varint"},
		{m + "/transport/wire", "crypto/sha256"},
		{m + "/netstack", m + "/transportx"},        // prefix without '/'
		{m + "/daemon", m + "/cmdutil"},             // not cmd/
		{m + "/internal/glue", m + "/netstack/tcp"}, // internal may use netstack
		{m + "/cmd/tetherd", m + "/netstack"},
	}
	for _, a := range allowed {
		imports := cleanImports()
		if a.pkg == m+"/netstack" && a.imp == m+"/transportx" {
			// transportx imports netstack in the clean module; avoid a cycle.
			imports[m+"/transportx"] = nil
		}
		imports = withImports(imports, a.pkg, a.imp)
		g := fake(imports)
		_, vs, err := checkAll(rules(m), modulePkgs(g), g)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			t.Errorf("%s -> %s should be allowed, got %v", a.pkg, a.imp, v)
		}
	}
}

func TestCheckerSkipsAbsentPackages(t *testing.T) {
	// Only daemon and cmd/tetherd exist.
	g := fake(map[string][]string{
		m + "/cmd/tetherd": {"os"},
		m + "/daemon":      {m + "/cmd/tetherd"}, // violates rule 5
	})
	applied, vs, err := checkAll(rules(m), modulePkgs(g), g)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{rules(m)[4].Name}
	if !reflect.DeepEqual(applied, want) {
		t.Errorf("applied %v, want %v", applied, want)
	}
	if len(vs) != 1 || vs[0].Pkg != m+"/daemon" || vs[0].Dep != m+"/cmd/tetherd" {
		t.Errorf("violations %v, want daemon -> cmd/tetherd", vs)
	}

	// No rule package at all: nothing applies.
	g = fake(map[string][]string{m + "/internal/deptest": {"testing"}})
	applied, _, err = checkAll(rules(m), modulePkgs(g), g)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 0 {
		t.Errorf("applied %v to a module without rule packages", applied)
	}
}

func TestCheckerMissingGraphEntry(t *testing.T) {
	g := graph{m + "/netstack": {Path: m + "/netstack", Deps: []string{"nowhere.example/x"}}}
	if _, _, err := checkAll(rules(m), []string{m + "/netstack"}, g); err == nil {
		t.Error("a dependency missing from the graph was not reported")
	}
	_, _, err := checkAll(rules(m), []string{m + "/transport"}, graph{})
	if err == nil {
		t.Error("a package missing from the graph was not reported")
	}
}

func TestParseList(t *testing.T) {
	out := []byte(m + "/transport/wire\tfalse\terrors encoding/binary\tencoding/binary errors\n" +
		"errors\ttrue\t\t\n") // empty trailing fields on the last line
	g, err := parseList(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pkgInfo{
		"errors":              {Path: "errors", Standard: true},
		m + "/transport/wire": {Path: m + "/transport/wire", Imports: []string{"errors", "encoding/binary"}, Deps: []string{"encoding/binary", "errors"}},
	}
	if len(g) != len(want) {
		t.Errorf("parseList returned %d packages, want %d", len(g), len(want))
	}
	for p, w := range want {
		got := g[p]
		if got == nil {
			t.Errorf("parseList: %s missing", p)
			continue
		}
		if got.Path != w.Path || got.Standard != w.Standard ||
			!slices.Equal(got.Imports, w.Imports) || !slices.Equal(got.Deps, w.Deps) {
			t.Errorf("parseList: %s = %+v, want %+v", p, *got, w)
		}
	}
	for _, bad := range []string{"a b c\n", "a\tmaybe\t\t\n"} {
		if _, err := parseList([]byte(bad)); err == nil {
			t.Errorf("parseList(%q) did not fail", bad)
		}
	}
}
