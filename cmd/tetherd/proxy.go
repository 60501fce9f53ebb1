package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/daemon"
	"github.com/tetherd/tetherd/proxy"
	"github.com/tetherd/tetherd/transport"
)

const proxyDescription = `Run a SOCKS5 and HTTP proxy on one local port whose connections go through the
peer (a phone running 'tetherd serve'). Needs no root: use it where 'tetherd up'
cannot run, or to send one application at a time through the peer. Runs in the
foreground until interrupted.

Both protocols share the port: SOCKS5 (CONNECT and UDP ASSOCIATE; host names are
resolved by the peer) and HTTP (CONNECT tunnels and http:// requests).

  tetherd proxy tether://phone:8443?token=...
  curl --socks5-hostname 127.0.0.1:1080 https://example.com/
  curl -x http://127.0.0.1:1080 http://example.com/
  HTTPS_PROXY=http://127.0.0.1:1080 some-app

PEER-URI is the line 'tetherd serve' printed; it overrides the configuration's peer.
The configuration (token, limits, log) is --config FILE, else /etc/tetherd/config.yaml
if it exists. Listening beyond loopback needs --user and --password-file, or
--allow-open.`

func runProxy(ctx context.Context, c *cli, args []string) error {
	fs := newFlagSet(c, "proxy", "[PEER-URI] [flags]", proxyDescription)
	listen := fs.String("listen", "127.0.0.1:1080", "listen on `ADDR`, host:port (default 127.0.0.1:1080)")
	configPath := fs.String("config", "", "read the YAML configuration `FILE` (default "+systemConfig+" if it exists)")
	user := fs.String("user", "", "require the user name `U` (SOCKS5 username/password, HTTP Basic)")
	passwordFile := fs.String("password-file", "", "read the password for --user from `F` (first line)")
	allowOpen := fs.Bool("allow-open", false, "allow listening beyond loopback without --user")
	logLevel := fs.String("log-level", "", "log at level `L`: debug, info, warn or error (default info)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on `ADDR`, host:port (default: metrics.listen, off)")
	positional, err := fs.parseOptionalArg(args)
	if err != nil {
		return err
	}
	if (*user == "") != (*passwordFile == "") {
		return &usageError{err: errors.New("--user and --password-file go together")}
	}
	var auth *proxy.Credentials
	if *user != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return err
		}
		pw, _, _ := strings.Cut(string(b), "\n")
		pw = strings.TrimRight(pw, "\r")
		if pw == "" {
			return fmt.Errorf("%s: empty password", *passwordFile)
		}
		auth = &proxy.Credentials{User: *user, Password: pw}
	}
	cfg, err := loadPeerConfig(*configPath, positional, *logLevel)
	if err != nil {
		return err
	}
	if *metrics != "" {
		cfg.Metrics.Listen = *metrics
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	peer, err := transport.ParsePeerURI(cfg.Peer)
	if err != nil {
		return err
	}
	token, err := peerToken(cfg)
	if err != nil {
		return err
	}
	limits, err := cfg.Limits.Transport()
	if err != nil {
		return err
	}
	log, err := c.newLogger(cfg.Log)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	sessions, err := proxy.NewSessions(proxy.SessionsOptions{
		Dialer: func(ctx context.Context) (*transport.Session, error) {
			return transport.Dial(ctx, cfg.Peer, &transport.DialOptions{
				Token:  token,
				Config: limits,
				Logger: log.Named("transport"),
			})
		},
		Logger: log.Named("sessions"),
	})
	if err != nil {
		return err
	}
	defer sessions.Close()
	// Fail at once on a wrong token, pin or peer.
	if _, err := sessions.Session(ctx); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if err := proxy.CheckListen(ln.Addr(), auth, *allowOpen); err != nil {
		ln.Close()
		return err
	}
	srv := &proxy.Server{
		Session:   sessions.Session,
		Auth:      auth,
		AllowOpen: *allowOpen,
		Logger:    log.Named("proxy"),
	}
	// `tetherd status` and `tetherd flows` for the user who runs the proxy, and the
	// optional metrics.
	mon := &proxyMonitor{sessions: sessions, srv: srv, peer: peer.Redacted(), listen: ln.Addr().String()}
	stopMonitor, err := startMonitor(ctx, log, mon, monitorOptions{Socket: proxySocket(cfg), MetricsAddr: cfg.Metrics.Listen, Pprof: cfg.Metrics.Pprof})
	if err != nil {
		ln.Close()
		return err
	}
	defer stopMonitor()
	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		mon.sample(sampleCtx)
	}()
	defer func() { stopSampling(); <-sampled }()
	log.Info("proxy listening", zap.Stringer("addr", ln.Addr()), zap.Bool("auth", auth != nil))
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err = srv.Serve(ln)
	srv.Close()
	ln.Close()
	if ctx.Err() != nil {
		log.Info("proxy stopped", zap.Error(context.Cause(ctx)))
		return nil
	}
	return err
}

// proxyMonitor reports the proxy's state as `tetherd status` and the metrics show it.
type proxyMonitor struct {
	sessions     *proxy.Sessions
	srv          *proxy.Server
	peer, listen string
	rates        daemon.RateMeter
}

// sample feeds the rate meter and the memory returner until ctx is done: every
// second while anything changes, up to every 5 s while the proxy is idle.
func (m *proxyMonitor) sample(ctx context.Context) {
	var pace daemon.Pacer
	t := time.NewTimer(pace.Next(true))
	defer t.Stop()
	var mem daemon.MemoryReturner
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			ss := m.sessions.Stats()
			moved := m.rates.Sample(now, ss.BytesUp, ss.BytesDown)
			ps := m.srv.Stats()
			watch := mem.Observe(ps.TCPActive + ps.UDPActive)
			t.Reset(pace.Next(moved || watch))
		}
	}
}

// Status returns the proxy's state.
func (m *proxyMonitor) Status() daemon.Status {
	ss, ps := m.sessions.Stats(), m.srv.Stats()
	st := daemon.Status{
		Mode:          "proxy",
		State:         "reconnecting",
		Peer:          m.peer,
		Listen:        m.listen,
		BytesUp:       ss.BytesUp,
		BytesDown:     ss.BytesDown,
		TCPFlows:      ps.TCPActive,
		UDPFlows:      ps.UDPActive,
		TCPFlowsTotal: ps.TCPTotal,
		UDPFlowsTotal: ps.UDPTotal,
		TCPRefused:    ps.TCPFailed,
		Reconnects:    ss.Reconnects,
		LastError:     ss.LastError,
	}
	st.RateUp, st.RateDown = m.rates.Rates()
	if ss.Connected {
		st.State = "connected"
		st.ConnectedSince = ss.Since
		st.RTTMillis = float64(ss.RTT.Microseconds()) / 1000
	}
	return st
}

// Flows returns the proxy's open flows.
func (m *proxyMonitor) Flows() []daemon.Flow { return m.srv.Flows() }
