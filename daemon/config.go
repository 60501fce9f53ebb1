// Package daemon wires the netstack and the transport into the tetherd client and holds
// the configuration.
package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/tetherd/tetherd/internal/fsutil"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// Config is the whole tetherd configuration, as read from a YAML file by LoadConfig.
// Every section is optional; a missing key keeps its value from DefaultConfig.
type Config struct {
	// Peer is the peer's URI for `tetherd up`, as printed by `tetherd serve`:
	// tether://HOST:PORT?token=…&pin=sha256:…, or a ws:// or wss:// URL.
	Peer string `yaml:"peer"`
	// Token overrides the token of the peer URI.
	Token string `yaml:"token"`
	// TokenFile is a file holding the token (mode 0600); mutually exclusive with
	// Token. A relative path is relative to the configuration file's directory.
	TokenFile string `yaml:"token_file"`
	// TUN configures the tunnel device of `tetherd up`.
	TUN TUNConfig `yaml:"tun"`
	// Routes says what goes into the tunnel.
	Routes RoutesConfig `yaml:"routes"`
	// DNS says how names are resolved while the tunnel is up.
	DNS DNSConfig `yaml:"dns"`
	// JournalDir is where `tetherd up` records what it changed, so that `tetherd
	// down` can restore it after a crash. Default /run/tetherd.
	JournalDir string `yaml:"journal_dir"`
	// ControlSocket is the Unix socket on which `tetherd up` and `tetherd proxy` serve
	// their status and flows to `tetherd status` and `tetherd flows`. Empty: for up,
	// control.sock in JournalDir; for proxy, proxy.sock in $XDG_RUNTIME_DIR/tetherd
	// (or /tmp/tetherd-UID). Must be an absolute path.
	ControlSocket string `yaml:"control_socket"`
	// Metrics configures the optional Prometheus endpoint of up, proxy and serve.
	Metrics MetricsConfig `yaml:"metrics"`
	// Serve configures the peer side, `tetherd serve`.
	Serve ServeConfig `yaml:"serve"`
	// Log configures logging, for every command.
	Log LogConfig `yaml:"log"`
	// Limits sets the limits and timers of every tether.v1 session.
	Limits LimitsConfig `yaml:"limits"`
}

// MetricsConfig is the "metrics" section.
type MetricsConfig struct {
	// Listen is the TCP address (host:port) of the Prometheus endpoint, /metrics.
	// Empty (the default): no endpoint. It tells anyone who can reach it how much
	// traffic flows and how many connections are open: keep it on loopback.
	Listen string `yaml:"listen"`
	// Pprof also serves Go's profiles (net/http/pprof) at /debug/pprof/ on the same
	// address: CPU, heap, goroutines. Default false. Profiles show addresses and
	// timing of traffic: like the metrics, keep them on loopback.
	Pprof bool `yaml:"pprof"`
}

// ServeConfig is the "serve" section: the peer's listener, identity and policy.
type ServeConfig struct {
	// Listen is the TCP address to listen on, host:port. Default "0.0.0.0:8443"; port 0
	// picks a free port.
	Listen string `yaml:"listen"`
	// Path is the HTTP path of the tether.v1 WebSocket. Default "/tether".
	Path string `yaml:"path"`
	// Token is the bearer token clients must present. When both Token and TokenFile
	// are empty, `tetherd serve` generates one and keeps it in StateDir.
	Token string `yaml:"token"`
	// TokenFile is a file holding the token (mode 0600, trailing newline ignored);
	// mutually exclusive with Token. A relative path is relative to the
	// configuration file's directory.
	TokenFile string `yaml:"token_file"`
	// StateDir holds the certificate, its key and the generated token. Empty means
	// $XDG_STATE_HOME/tetherd, else $HOME/.local/state/tetherd (see ResolveStateDir).
	StateDir string `yaml:"state_dir"`
	// InsecurePlaintext serves plain HTTP (ws://) instead of TLS, for use behind a
	// reverse proxy that terminates TLS.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// Hosts are extra host names or IP addresses under which the peer is reachable:
	// they go into the certificate and each gets a printed URI.
	Hosts []string `yaml:"hosts"`
	// DialTimeout bounds each TCP connection attempt to a destination. Default 10s.
	DialTimeout Duration `yaml:"dial_timeout"`
	// UDPIdleTimeout ends a UDP association that carried no datagram for this long.
	// Default 2m.
	UDPIdleTimeout Duration `yaml:"udp_idle_timeout"`
	// PolicyConfig decides which destinations clients may reach (the "policy" key;
	// the method Policy converts it).
	PolicyConfig PolicyConfig `yaml:"policy"`

	// MaxSessions caps the client sessions running at once; more are answered 503.
	// Default 32.
	MaxSessions int `yaml:"max_sessions"`
	// MaxUnauthenticatedConns caps the connections that have not (yet) upgraded with
	// the right token, MaxUnauthenticatedPerSource those from one address (an IPv6
	// /64); more are closed at once. Defaults 64 and 8.
	MaxUnauthenticatedConns     int `yaml:"max_unauthenticated_conns"`
	MaxUnauthenticatedPerSource int `yaml:"max_unauthenticated_per_source"`
	// AuthFailureBurst is how many wrong tokens one address may send before it is
	// answered 429 without its token being checked; it regains one attempt every
	// AuthFailureInterval. Defaults 5 and 20s; -1 turns the limit off.
	AuthFailureBurst    int      `yaml:"auth_failure_burst"`
	AuthFailureInterval Duration `yaml:"auth_failure_interval"`
	// RelayBuffers caps the 32 KiB read buffers of one session's TCP relays (beyond
	// it they read 2 KiB at a time). Default 16MiB.
	RelayBuffers Size `yaml:"relay_buffers"`
}

// ApplyLimits sets srv's abuse limits from the section (0 keeps the server's
// default).
func (c *ServeConfig) ApplyLimits(srv *transport.Server) {
	srv.MaxSessions = c.MaxSessions
	srv.MaxUnauthenticatedConns = c.MaxUnauthenticatedConns
	srv.MaxUnauthenticatedPerSource = c.MaxUnauthenticatedPerSource
	srv.AuthFailureBurst = c.AuthFailureBurst
	srv.AuthFailureInterval = time.Duration(c.AuthFailureInterval)
	srv.RelayBuffers = int(c.RelayBuffers)
}

// PolicyConfig is the "serve.policy" section; see transport.Policy for the semantics.
type PolicyConfig struct {
	// Allow, when not empty, lists the only destination networks (CIDR, or a single
	// IP address) clients may reach.
	Allow []string `yaml:"allow"`
	// Deny lists destination networks always refused.
	Deny []string `yaml:"deny"`
	// AllowLoopback lets clients reach the peer's own loopback addresses.
	AllowLoopback bool `yaml:"allow_loopback"`
	// AllowLinkLocal lets clients reach link-local addresses (never the cloud
	// metadata addresses).
	AllowLinkLocal bool `yaml:"allow_link_local"`
	// AllowPorts, when not empty, lists the only destination ports allowed: "443" or
	// "8000-8999".
	AllowPorts []string `yaml:"allow_ports"`
	// DenyPorts lists destination ports always refused.
	DenyPorts []string `yaml:"deny_ports"`
}

// LogConfig is the "log" section.
type LogConfig struct {
	// Level is the least severe level logged: debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is console, json, or auto (console when standard error is a terminal,
	// json otherwise). Default auto.
	Format string `yaml:"format"`
}

// LimitsConfig is the "limits" section; see transport.Config for the meaning of each
// field. A zero value means the transport's default.
type LimitsConfig struct {
	// InitialWindow is the credit granted for every new stream. Default 256KiB.
	InitialWindow Size `yaml:"initial_window"`
	// MaxWindow is the largest a stream window grows to (it grows while it limits a
	// transfer and the link has no queue). Default 16MiB.
	MaxWindow Size `yaml:"max_window"`
	// SessionWindow caps the sum of the stream windows of a session. Default 64MiB.
	SessionWindow Size `yaml:"session_window"`
	// MaxFrame is the largest frame payload accepted. Default 64KiB.
	MaxFrame Size `yaml:"max_frame"`
	// WriteBuffer is how much stream data may wait for the WebSocket. Default 512KiB.
	WriteBuffer Size `yaml:"write_buffer"`
	// DgramQueue is how much datagram data may wait before datagrams are dropped.
	// Default 512KiB.
	DgramQueue Size `yaml:"dgram_queue"`
	// MaxStreams is how many streams a session may have open. Default 16384.
	MaxStreams int `yaml:"max_streams"`
	// MaxPendingOpens is how many OPENs a peer dials at once per session. Default 1024.
	MaxPendingOpens int `yaml:"max_pending_opens"`
	// MaxPendingOpensPerHost is how many of those one host (any port) may hold once
	// half of them are taken, so that a host that does not answer cannot hold every
	// slot. Default 64; a value above MaxPendingOpens counts as MaxPendingOpens.
	MaxPendingOpensPerHost int `yaml:"max_pending_opens_per_host"`
	// KeepAlive is the interval between PINGs. Default 5s.
	KeepAlive Duration `yaml:"keepalive"`
	// KeepAliveTimeout is how long a session may receive nothing before it is
	// declared dead. Default 15s.
	KeepAliveTimeout Duration `yaml:"keepalive_timeout"`
}

// Defaults of the limits section. They are transport.Config's defaults, which the
// transport package does not export; keep them in step with transport/config.go.
const (
	defaultInitialWindow          = 256 << 10
	defaultMaxWindow              = 16 << 20
	defaultSessionWindow          = 64 << 20
	defaultMaxFrame               = 64 << 10
	defaultWriteBuffer            = 512 << 10
	defaultDgramQueue             = 512 << 10
	defaultMaxStreams             = 16384
	defaultMaxPendingOpens        = 1024
	defaultMaxPendingOpensPerHost = 64
	defaultKeepAlive              = 5 * time.Second
	defaultKeepAliveTimeout       = 15 * time.Second
)

// DefaultConfig returns the configuration used when no file is given: the values
// documented in config.yaml.
func DefaultConfig() *Config {
	return &Config{
		TUN:        defaultTUN(),
		Routes:     RoutesConfig{LANBypass: true},
		DNS:        defaultDNS(),
		JournalDir: "/run/tetherd",
		Serve: ServeConfig{
			Listen:         "0.0.0.0:8443",
			Path:           "/tether",
			DialTimeout:    Duration(10 * time.Second),
			UDPIdleTimeout: Duration(2 * time.Minute),

			MaxSessions:                 transport.DefaultMaxSessions,
			MaxUnauthenticatedConns:     transport.DefaultMaxUnauthenticatedConns,
			MaxUnauthenticatedPerSource: transport.DefaultMaxUnauthenticatedPerSource,
			AuthFailureBurst:            transport.DefaultAuthFailureBurst,
			AuthFailureInterval:         Duration(transport.DefaultAuthFailureInterval),
			RelayBuffers:                transport.DefaultRelayBuffers,
		},
		Log: LogConfig{Level: "info", Format: "auto"},
		Limits: LimitsConfig{
			InitialWindow:          defaultInitialWindow,
			MaxWindow:              defaultMaxWindow,
			SessionWindow:          defaultSessionWindow,
			MaxFrame:               defaultMaxFrame,
			WriteBuffer:            defaultWriteBuffer,
			DgramQueue:             defaultDgramQueue,
			MaxStreams:             defaultMaxStreams,
			MaxPendingOpens:        defaultMaxPendingOpens,
			MaxPendingOpensPerHost: defaultMaxPendingOpensPerHost,
			KeepAlive:              Duration(defaultKeepAlive),
			KeepAliveTimeout:       Duration(defaultKeepAliveTimeout),
		},
	}
}

// maxConfigSize bounds a configuration file.
const maxConfigSize = 1 << 20

// LoadConfig reads the YAML configuration file at path. Keys it does not set keep their
// DefaultConfig values; an empty file means all defaults. The file must not be
// accessible by group or others (it may hold the token). An unknown key, a value of the
// wrong type or an invalid value fails with a *ConfigError whose lines read
// "path:LINE: KEY: what is wrong". A relative serve.token_file is made relative to the
// file's directory.
func LoadConfig(path string) (*Config, error) {
	data, err := readPrivateFile(path, "config file", maxConfigSize)
	if err != nil {
		return nil, err
	}
	cfg, err := parseConfig(data, path)
	if err != nil {
		return nil, err
	}
	for _, tf := range []*string{&cfg.Serve.TokenFile, &cfg.TokenFile} {
		if *tf != "" && !filepath.IsAbs(*tf) && !strings.HasPrefix(*tf, "~/") {
			*tf = filepath.Join(filepath.Dir(path), *tf)
		}
	}
	return cfg, nil
}

// parseConfig decodes and validates data; file names it in errors.
func parseConfig(data []byte, file string) (*Config, error) {
	cfg := DefaultConfig()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, problems{syntaxProblem(err)}.err(file)
	}
	ix := newNodeIndex(&doc)
	if len(ix.dups) > 0 {
		return nil, ix.dups.err(file)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	switch err := dec.Decode(cfg); {
	case errors.Is(err, io.EOF): // empty, or only comments
		return cfg, nil
	case err != nil:
		return nil, ix.decodeError(file, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, problems{syntaxProblem(err)}.err(file)
	default:
		return nil, problems{{Line: next.Line, Msg: "a second YAML document is not allowed (remove the \"---\" line)"}}.err(file)
	}
	if err := cfg.Validate(); err != nil {
		return nil, ix.locate(file, err)
	}
	return cfg, nil
}

// Validate checks every value of c and returns a *ConfigError listing all problems,
// each with the key it is about (LoadConfig adds file names and line numbers).
func (c *Config) Validate() error {
	var ps problems
	c.validateClient(&ps)
	if c.ControlSocket != "" && !filepath.IsAbs(c.ControlSocket) {
		ps.add("control_socket", "must be an absolute path, not %q", c.ControlSocket)
	}
	if c.Metrics.Listen != "" {
		if err := checkListen(c.Metrics.Listen); err != nil {
			ps.add("metrics.listen", "%v", err)
		}
	}
	c.Serve.validate(&ps)
	c.Log.validate(&ps)
	c.Limits.check(&ps)
	return ps.err("")
}

func (c *ServeConfig) validate(ps *problems) {
	if err := checkListen(c.Listen); err != nil {
		ps.add("serve.listen", "%v", err)
	}
	if err := checkPath(c.Path); err != nil {
		ps.add("serve.path", "%v", err)
	}
	if c.Token != "" {
		if err := checkToken(c.Token); err != nil {
			ps.add("serve.token", "%v", err)
		}
		if c.TokenFile != "" {
			ps.add("serve.token_file", "token and token_file are mutually exclusive; set only one")
		}
	}
	for i, h := range c.Hosts {
		if err := checkHost(h); err != nil {
			ps.add(fmt.Sprintf("serve.hosts[%d]", i), "%v", err)
		}
	}
	if c.DialTimeout < 0 {
		ps.add("serve.dial_timeout", "must not be negative")
	}
	if c.UDPIdleTimeout < 0 {
		ps.add("serve.udp_idle_timeout", "must not be negative")
	}
	for _, v := range []struct {
		key string
		n   int
	}{
		{"serve.max_sessions", c.MaxSessions},
		{"serve.max_unauthenticated_conns", c.MaxUnauthenticatedConns},
		{"serve.max_unauthenticated_per_source", c.MaxUnauthenticatedPerSource},
	} {
		if v.n < 0 {
			ps.add(v.key, "must not be negative (0 means the default)")
		}
	}
	if c.MaxUnauthenticatedPerSource > 0 && c.MaxUnauthenticatedConns > 0 && c.MaxUnauthenticatedPerSource > c.MaxUnauthenticatedConns {
		ps.add("serve.max_unauthenticated_per_source", "%d is more than max_unauthenticated_conns (%d)", c.MaxUnauthenticatedPerSource, c.MaxUnauthenticatedConns)
	}
	if c.AuthFailureBurst < -1 {
		ps.add("serve.auth_failure_burst", "want -1 (off), 0 (the default) or more")
	}
	if c.AuthFailureInterval < 0 {
		ps.add("serve.auth_failure_interval", "must not be negative")
	}
	if c.RelayBuffers != 0 && c.RelayBuffers < 64<<10 {
		ps.add("serve.relay_buffers", "want at least 64KiB (0 means the default)")
	}
	c.policy(ps)
}

// Policy converts the policy section into a transport.Policy. Its error is a
// *ConfigError naming the bad entries.
func (c *ServeConfig) Policy() (*transport.Policy, error) {
	var ps problems
	p := c.policy(&ps)
	if err := ps.err(""); err != nil {
		return nil, err
	}
	return p, nil
}

func (c *ServeConfig) policy(ps *problems) *transport.Policy {
	pc := &c.PolicyConfig
	p := &transport.Policy{AllowLoopback: pc.AllowLoopback, AllowLinkLocal: pc.AllowLinkLocal}
	prefixes := func(key string, list []string) []netip.Prefix {
		var out []netip.Prefix
		for i, s := range list {
			pre, err := parsePrefix(s)
			if err != nil {
				ps.add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
				continue
			}
			out = append(out, pre)
		}
		return out
	}
	ports := func(key string, list []string) []transport.PortRange {
		var out []transport.PortRange
		for i, s := range list {
			r, err := transport.ParsePortRange(s)
			if err != nil {
				ps.add(fmt.Sprintf("%s[%d]", key, i), "invalid port range %q: want a port such as \"443\" or a range such as \"8000-8999\"", s)
				continue
			}
			out = append(out, r)
		}
		return out
	}
	p.Allow = prefixes("serve.policy.allow", pc.Allow)
	p.Deny = prefixes("serve.policy.deny", pc.Deny)
	p.AllowPorts = ports("serve.policy.allow_ports", pc.AllowPorts)
	p.DenyPorts = ports("serve.policy.deny_ports", pc.DenyPorts)
	return p
}

// parsePrefix parses a CIDR prefix or a single IP address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		if ip, err := netip.ParseAddr(s); err == nil && ip.Zone() == "" {
			ip = ip.Unmap()
			return netip.PrefixFrom(ip, ip.BitLen()), nil
		}
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: want a network such as \"10.0.0.0/8\" or an IP address", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("invalid CIDR %q: write IPv4 networks in dotted form", s)
	}
	return p.Masked(), nil
}

// ResolveStateDir returns StateDir, or the default state directory when it is empty:
// $XDG_STATE_HOME/tetherd when that variable holds an absolute path, else
// $HOME/.local/state/tetherd. A leading "~/" is replaced by the home directory.
func (c *ServeConfig) ResolveStateDir() (string, error) {
	if c.StateDir != "" {
		return expandHome(c.StateDir)
	}
	if x := os.Getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "tetherd"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("no state directory: neither $XDG_STATE_HOME nor $HOME is set; set serve.state_dir or --state-dir")
	}
	return filepath.Join(home, ".local", "state", "tetherd"), nil
}

// ReadToken returns the configured token: Token, else the content of TokenFile, else
// "" (the caller then generates one, see LoadOrCreateToken).
func (c *ServeConfig) ReadToken() (string, error) {
	if c.Token != "" {
		if err := checkToken(c.Token); err != nil {
			return "", fmt.Errorf("serve.token: %w", err)
		}
		return c.Token, nil
	}
	if c.TokenFile == "" {
		return "", nil
	}
	path, err := expandHome(c.TokenFile)
	if err != nil {
		return "", err
	}
	return ReadTokenFile(path)
}

func expandHome(p string) (string, error) {
	rest, ok := strings.CutPrefix(p, "~/")
	if !ok {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("cannot expand %q: $HOME is not set", p)
	}
	return filepath.Join(home, rest), nil
}

func (c *LogConfig) validate(ps *problems) {
	if _, err := parseLevel(c.Level); err != nil {
		ps.add("log.level", "%v", err)
	}
	switch c.Format {
	case "auto", "console", "json", "":
	default:
		ps.add("log.format", "unknown format %q: want auto, console or json", c.Format)
	}
}

// Transport converts the limits section into a transport.Config (a zero field keeps
// the transport's default). Its error is a *ConfigError naming the bad values.
func (c *LimitsConfig) Transport() (*transport.Config, error) {
	var ps problems
	c.check(&ps)
	if err := ps.err(""); err != nil {
		return nil, err
	}
	return &transport.Config{
		InitialWindow:          int(c.InitialWindow),
		MaxWindow:              int(c.MaxWindow),
		SessionWindow:          int(c.SessionWindow),
		MaxFrame:               int(c.MaxFrame),
		MaxStreams:             c.MaxStreams,
		MaxPendingOpens:        c.MaxPendingOpens,
		MaxPendingOpensPerHost: c.perHost(),
		WriteBuffer:            int(c.WriteBuffer),
		DgramQueue:             int(c.DgramQueue),
		KeepAlive:              time.Duration(c.KeepAlive),
		KeepAliveTimeout:       time.Duration(c.KeepAliveTimeout),
	}, nil
}

// perHost is MaxPendingOpensPerHost with its default, at most MaxPendingOpens (with
// its default).
func (c *LimitsConfig) perHost() int {
	total, n := c.MaxPendingOpens, c.MaxPendingOpensPerHost
	if total == 0 {
		total = defaultMaxPendingOpens
	}
	if n == 0 {
		n = defaultMaxPendingOpensPerHost
	}
	return min(n, total)
}

// check mirrors the range checks of transport.Config, which are not exported, so a bad
// value is reported at start-up with its key rather than when the first client
// connects.
func (c *LimitsConfig) check(ps *problems) {
	or := func(v, def Size) Size {
		if v == 0 {
			return def
		}
		return v
	}
	iw, mw := or(c.InitialWindow, defaultInitialWindow), or(c.MaxWindow, defaultMaxWindow)
	sw, mf := or(c.SessionWindow, defaultSessionWindow), or(c.MaxFrame, defaultMaxFrame)
	wb, dq := or(c.WriteBuffer, defaultWriteBuffer), or(c.DgramQueue, defaultDgramQueue)
	switch {
	case iw < 1<<10 || iw > wire.MaxWindow:
		ps.add("limits.initial_window", "%v out of range [1KiB, %v]", iw, Size(wire.MaxWindow))
	case mw < iw || mw > wire.MaxWindow:
		ps.add("limits.max_window", "%v out of range [initial_window (%v), %v]", mw, iw, Size(wire.MaxWindow))
	case sw < mw:
		ps.add("limits.session_window", "%v is smaller than max_window (%v)", sw, mw)
	}
	if mf < 1<<10 || mf > wire.MaxFrameLimit {
		ps.add("limits.max_frame", "%v out of range [1KiB, %v]", mf, Size(wire.MaxFrameLimit))
	}
	if wb < 16<<10 || wb > wire.MaxMessage {
		ps.add("limits.write_buffer", "%v out of range [16KiB, %v]", wb, Size(wire.MaxMessage))
	}
	if dq < 16<<10 {
		ps.add("limits.dgram_queue", "%v is smaller than 16KiB", dq)
	}
	if c.MaxStreams < 0 {
		ps.add("limits.max_streams", "must be positive (0 means the default, %d)", defaultMaxStreams)
	}
	if c.MaxPendingOpens < 0 {
		ps.add("limits.max_pending_opens", "must be positive (0 means the default, %d)", defaultMaxPendingOpens)
	}
	if c.MaxPendingOpensPerHost < 0 {
		ps.add("limits.max_pending_opens_per_host", "must be positive (0 means the default, %d)", defaultMaxPendingOpensPerHost)
	}
	ka, kt := c.KeepAlive, c.KeepAliveTimeout
	if ka == 0 {
		ka = Duration(defaultKeepAlive)
	}
	if kt == 0 {
		kt = Duration(defaultKeepAliveTimeout)
	}
	switch {
	case ka < 0:
		ps.add("limits.keepalive", "must not be negative")
	case kt < ka:
		ps.add("limits.keepalive_timeout", "%v is shorter than keepalive (%v)", kt, ka)
	}
}

// checkListen checks a host:port listen address; the port may be 0.
func checkListen(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port, such as \"0.0.0.0:8443\" or \"[::]:8443\"", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q in %q: want 0-65535", port, s)
	}
	if host != "" {
		if err := checkHost(host); err != nil {
			return fmt.Errorf("invalid host in %q: %v", s, err)
		}
	}
	return nil
}

// checkHost accepts an IP address (IPv6 optionally in brackets) or a DNS name.
func checkHost(h string) error {
	bare := h
	if strings.HasPrefix(bare, "[") && strings.HasSuffix(bare, "]") {
		bare = bare[1 : len(bare)-1]
	}
	if _, err := netip.ParseAddr(bare); err == nil {
		return nil
	}
	if !fsutil.ValidDNSName(strings.TrimSuffix(h, ".")) {
		return fmt.Errorf("%q is neither an IP address nor a host name", h)
	}
	return nil
}

// checkPath accepts an absolute URL path of plain segments that does not collide with
// the peer's other pages ("/" and "/healthz").
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("invalid path %q: must start with \"/\", such as \"/tether\"", p)
	}
	if p == "/" || p == "/healthz" {
		return fmt.Errorf("path %q is taken by the peer's own pages; use another, such as \"/tether\"", p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("invalid path %q: empty, \".\" or \"..\" segment", p)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0) {
				return fmt.Errorf("invalid path %q: use only letters, digits, '/', '-', '.', '_' and '~'", p)
			}
		}
	}
	return nil
}

// checkToken accepts what a tether:// URI can carry: non-empty UTF-8 text without
// white space or control characters. Its errors never contain the token.
func checkToken(t string) error {
	if t == "" {
		return fmt.Errorf("token is empty")
	}
	if len(t) > 1024 {
		return fmt.Errorf("token is longer than 1024 bytes")
	}
	for _, r := range t {
		if r == unicode.ReplacementChar || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("token contains white space, control characters or invalid UTF-8")
		}
	}
	return nil
}
