package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// shutdownTimeout is how long open streams may take to finish after a signal.
const shutdownTimeout = 10 * time.Second

const serveDescription = `Run the peer: accept tether.v1 clients and connect to the destinations they
ask for, as the user running it (no privileges needed). On start it prints one
tether:// URI per address it can be reached at; give one to 'tetherd up' on the
laptop. The token and the TLS certificate are kept in the state directory, so the
URI stays the same across restarts. Flags override the configuration file;
config.yaml in the source tree documents every option.`

// serveFlagKeys maps the flags of serve to the configuration keys they override.
func serveFlagKeys() map[string]string {
	return map[string]string{
		"listen":             "serve.listen",
		"token":              "serve.token",
		"state-dir":          "serve.state_dir",
		"insecure-plaintext": "serve.insecure_plaintext",
		"host":               "serve.hosts",
		"log-level":          "log.level",
		"metrics":            "metrics.listen",
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// runServe is `tetherd serve`: it returns nil after a graceful shutdown when ctx is
// canceled.
func runServe(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "serve", "[flags]", serveDescription)
	listen := fs.String("listen", "", "listen on `ADDR`, host:port (default 0.0.0.0:8443; port 0 picks a free port)")
	token := fs.String("token", "", "bearer `TOKEN` clients must present (default: generated once and kept in the\nstate directory); other local users can see it in the process list")
	configPath := fs.String("config", "", "read the YAML configuration `FILE` (default: none, built-in defaults)")
	stateDir := fs.String("state-dir", "", "keep the certificate, key and token in `DIR`\n(default $XDG_STATE_HOME/tetherd, else ~/.local/state/tetherd)")
	plaintext := fs.Bool("insecure-plaintext", false, "serve ws:// without TLS, only behind a reverse proxy that terminates TLS")
	var hosts stringList
	fs.Var(&hosts, "host", "also reachable as `NAME` (host name or IP): put it in the certificate and\nprint a URI for it; repeatable, replaces serve.hosts")
	logLevel := fs.String("log-level", "", "log at level `L`: debug, info, warn or error (default info)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on `ADDR`, host:port (default: metrics.listen, off)")
	if err := fs.parse(args); err != nil {
		return err
	}

	cfg := daemon.DefaultConfig()
	if *configPath != "" {
		var err error
		if cfg, err = daemon.LoadConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	sc := &cfg.Serve
	if set["listen"] {
		sc.Listen = *listen
	}
	if set["token"] {
		if *token == "" {
			return &usageError{err: errors.New("--token must not be empty (leave it out to use a generated token)")}
		}
		sc.Token, sc.TokenFile = *token, ""
	}
	if set["state-dir"] {
		sc.StateDir = *stateDir
	}
	if set["insecure-plaintext"] {
		sc.InsecurePlaintext = *plaintext
	}
	if set["host"] {
		sc.Hosts = hosts
	}
	if set["log-level"] {
		cfg.Log.Level = *logLevel
	}
	if set["metrics"] {
		cfg.Metrics.Listen = *metrics
	}
	if err := cfg.Validate(); err != nil {
		return blameFlags(err, set)
	}
	log, err := c.newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return serve(ctx, c.stdout, cfg, log)
}

// blameFlags names the flag instead of the configuration key in the problems of a
// Validate error that are about a value given as a flag.
func blameFlags(err error, set map[string]bool) error {
	var ce *daemon.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	for i, p := range ce.Problems {
		for name, key := range serveFlagKeys() {
			if set[name] && (p.Key == key || strings.HasPrefix(p.Key, key+"[")) {
				ce.Problems[i].Key = "--" + name
				ce.Problems[i].Line = 0
			}
		}
	}
	return ce
}

// serve runs the peer described by cfg until ctx is done, printing its URIs to stdout.
func serve(ctx context.Context, stdout io.Writer, cfg *daemon.Config, log *zap.Logger) error {
	sc := &cfg.Serve
	stateDir, err := sc.ResolveStateDir()
	if err != nil {
		return err
	}
	token, tokenSource, err := serveToken(sc, stateDir)
	if err != nil {
		return err
	}
	policy, err := sc.Policy()
	if err != nil {
		return err
	}
	limits, err := cfg.Limits.Transport()
	if err != nil {
		return err
	}
	listenHost, _, err := net.SplitHostPort(sc.Listen)
	if err != nil {
		return fmt.Errorf("serve.listen: %w", err)
	}
	hosts, warning := advertisedHosts(listenHost, sc.Hosts, interfaceAddrs)
	if warning != "" {
		log.Warn(warning)
	}

	var tlsConf *tls.Config
	var pin string
	if !sc.InsecurePlaintext {
		cert, err := transport.LoadOrCreateCertificate(stateDir, hosts)
		if err != nil {
			return err
		}
		pin = transport.SPKIPin(cert.Leaf)
		tlsConf = transport.ServerTLSConfig(cert)
	}

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", sc.Listen)
	if err != nil {
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w (ports below 1024 need privileges; use a higher port such as 8443)", err)
		}
		return err
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, h := range hosts {
		// A zone in a URI's host is written %25zone (RFC 6874).
		hostport := net.JoinHostPort(strings.ReplaceAll(h, "%", "%25"), port)
		if sc.InsecurePlaintext {
			fmt.Fprintln(stdout, plaintextURL(hostport, sc.Path, token))
		} else {
			fmt.Fprintln(stdout, transport.FormatPeerURI(hostport, sc.Path, token, pin))
		}
	}

	peer := &transport.Server{
		Token:          token,
		Policy:         policy,
		DialTimeout:    time.Duration(sc.DialTimeout),
		UDPIdleTimeout: time.Duration(sc.UDPIdleTimeout),
		Config:         limits,
		Logger:         log.Named("peer"),
	}
	sc.ApplyLimits(peer)
	errorLog, err := zap.NewStdLogAt(log.Named("http"), zapcore.DebugLevel)
	if err != nil {
		ln.Close()
		return err
	}
	hs := newHTTPServer(newServeMux(sc.Path, peer), peer, errorLog)
	ln = transport.CorkListener(ln) // one write per round of frames (under TLS)
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
	}

	if sc.InsecurePlaintext {
		log.Warn("TLS is off (insecure_plaintext): TLS must be terminated by a reverse proxy in front of this port, or the token and all traffic cross the network in clear")
	}
	if tokenSource == "serve.token" && len(token) < 16 {
		log.Warn("the token is short: anyone who guesses it can use this machine's network; use 16 or more random characters, or leave it unset to generate one")
	}
	if os.Geteuid() == 0 {
		log.Info("running as root is not needed: tetherd serve works as any user")
	}
	log.Info("serving",
		zap.String("listen", ln.Addr().String()),
		zap.String("path", sc.Path),
		zap.Bool("tls", tlsConf != nil),
		zap.String("pin", pin),
		zap.String("token", tokenSource),
		zap.String("state_dir", stateDir),
		zap.String("version", version))

	if cfg.Metrics.Listen != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		mctx, stopMetrics := context.WithCancel(context.Background())
		metricsDone := make(chan struct{})
		go func() {
			defer close(metricsDone)
			reg := daemon.NewRegistry(daemon.NewServerCollector(peer.Stats))
			if err := daemon.ServeMetrics(mctx, mln, reg, cfg.Metrics.Pprof); err != nil {
				log.Warn("metrics endpoint failed", zap.Error(err))
			}
		}()
		defer func() { stopMetrics(); <-metricsDone }()
		log.Info("serving metrics", zap.String("url", "http://"+mln.Addr().String()+"/metrics"))
	}

	// Memory back to the system after a mass close of streams.
	memCtx, stopMem := context.WithCancel(context.Background())
	memDone := make(chan struct{})
	go func() {
		defer close(memDone)
		var mem daemon.MemoryReturner
		var pace daemon.Pacer // every second while streams come and go, up to 5 s idle
		t := time.NewTimer(pace.Next(true))
		defer t.Stop()
		for {
			select {
			case <-memCtx.Done():
				return
			case <-t.C:
				st := peer.Stats()
				t.Reset(pace.Next(mem.Observe(st.StreamsOpen + st.AssociationsOpen)))
			}
		}
	}()
	defer func() { stopMem(); <-memDone }()

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		peer.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down", zap.NamedError("reason", context.Cause(ctx)), zap.Int("sessions", peer.Sessions()), zap.Duration("timeout", shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Stop accepting at once, while the sessions get GOAWAY and finish their streams.
	var wg sync.WaitGroup
	var httpErr error
	wg.Go(func() { httpErr = hs.Shutdown(sctx) })
	peerErr := peer.Shutdown(sctx)
	wg.Wait()
	if httpErr != nil {
		hs.Close()
	}
	<-served
	if peerErr != nil || httpErr != nil {
		log.Warn("shutdown timed out: closed the remaining connections")
	}
	log.Info("stopped")
	return nil
}

// Limits of the HTTP server in front of the peer. They only bound requests that have
// not become a session: net/http clears every deadline when the WebSocket upgrade
// takes the connection over.
const (
	// headerTimeout bounds the TLS handshake and the request headers (slowloris).
	headerTimeout = 10 * time.Second
	// requestTimeout bounds a whole request, body included, and writing its answer.
	requestTimeout = 30 * time.Second
	// idleTimeout closes a keep-alive connection that sends no next request.
	idleTimeout = 30 * time.Second
	// maxHeaderBytes bounds the request headers; an upgrade request needs about 1 KiB.
	maxHeaderBytes = 16 << 10
)

// newHTTPServer returns the http.Server that serves handler, with the slowloris
// timeouts above and peer's cap on connections that have not authenticated.
func newHTTPServer(handler http.Handler, peer *transport.Server, errorLog *stdlog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: headerTimeout,
		ReadTimeout:       requestTimeout,
		WriteTimeout:      requestTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnState:         peer.ConnState,
		ConnContext:       peer.ConnContext,
		ErrorLog:          errorLog,
		// HTTP/1.1 only: the WebSocket upgrade needs it.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
	}
}

// serveToken returns the token and where it came from: serve.token, the token file,
// or the state directory (generated on the first start).
func serveToken(sc *daemon.ServeConfig, stateDir string) (token, source string, err error) {
	switch {
	case sc.Token != "":
		t, err := sc.ReadToken()
		return t, "serve.token", err
	case sc.TokenFile != "":
		t, err := sc.ReadToken()
		return t, "token_file " + sc.TokenFile, err
	}
	t, err := daemon.LoadOrCreateToken(stateDir)
	return t, "state directory", err
}

// plaintextURL is the ws:// URL of a peer serving without TLS.
func plaintextURL(hostport, path, token string) string {
	return "ws://" + hostport + (&url.URL{Path: path}).EscapedPath() + "?token=" + url.QueryEscape(token)
}

// newServeMux routes path to the peer, and serves a one-line description at "/" and a
// health check at "/healthz".
func newServeMux(path string, peer http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(path, peer)
	text := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("X-Content-Type-Options", "nosniff")
			io.WriteString(w, body)
		}
	}
	mux.Handle("GET /{$}", text("tetherd peer ("+wire.Subprotocol+"): connect with 'tetherd up tether://…'\n"))
	mux.Handle("GET /healthz", text("ok\n"))
	return mux
}

// advertisedHosts returns the hosts to print a URI for: the extra hosts, then the
// listen host or, when that is a wildcard, the addresses of the machine (from ifaddrs)
// that are neither loopback nor link-local, in the address families the wildcard
// listens on. When there are none it falls back to loopback. warning, when not empty,
// says what went wrong.
func advertisedHosts(listenHost string, extra []string, ifaddrs func() ([]netip.Addr, error)) (hosts []string, warning string) {
	seen := map[string]bool{}
	add := func(h string) {
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		key := strings.ToLower(h)
		if a, err := netip.ParseAddr(h); err == nil {
			key = a.Unmap().String()
		}
		if h != "" && !seen[key] {
			seen[key] = true
			hosts = append(hosts, h)
		}
	}
	for _, h := range extra {
		add(h)
	}
	ip, err := netip.ParseAddr(listenHost)
	if listenHost != "" && (err != nil || !ip.IsUnspecified()) {
		add(listenHost)
		return hosts, ""
	}
	want4 := listenHost == "" || ip.Is4() || ip.Is6() // "::" listens on IPv4 too
	want6 := listenHost == "" || ip.Is6()
	addrs, err := ifaddrs()
	if err != nil {
		warning = fmt.Sprintf("cannot list the network addresses (%v): pass --host with the address clients reach this machine at", err)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	// IPv4 first: it is what most networks a phone shares are reached by.
	slices.SortStableFunc(addrs, func(a, b netip.Addr) int {
		switch {
		case a.Is4() == b.Is4():
			return 0
		case a.Is4():
			return -1
		}
		return 1
	})
	for _, a := range addrs {
		if a.IsGlobalUnicast() && (a.Is4() && want4 || a.Is6() && want6) {
			add(a.String())
		}
	}
	if len(hosts) == 0 {
		lo := "127.0.0.1"
		if !want4 {
			lo = "::1"
		}
		add(lo)
		if warning == "" {
			warning = "no network address found besides loopback: pass --host with the address clients reach this machine at"
		}
	}
	return hosts, warning
}

// interfaceAddrs returns the addresses of the interfaces that are up and not loopback.
func interfaceAddrs() ([]netip.Addr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			if addr, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, addr.Unmap())
			}
		}
	}
	return out, nil
}
