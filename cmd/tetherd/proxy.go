package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"go.uber.org/zap"

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
