package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/daemon"
)

// controlSocket is the name of up's control socket in the journal directory.
const controlSocket = "control.sock"

// proxySocketDir returns the directory of the proxy's default control socket:
// $XDG_RUNTIME_DIR/tetherd, else /tmp/tetherd-UID.
func proxySocketDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "tetherd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("tetherd-%d", os.Getuid()))
}

// upSocket and proxySocket return the control socket of up and of proxy for cfg.
func upSocket(cfg *daemon.Config) string {
	if cfg.ControlSocket != "" {
		return cfg.ControlSocket
	}
	return filepath.Join(platformJournalDir(cfg.JournalDir), controlSocket)
}

func proxySocket(cfg *daemon.Config) string {
	if cfg.ControlSocket != "" {
		return cfg.ControlSocket
	}
	return filepath.Join(proxySocketDir(), "proxy.sock")
}

// candidateSockets returns the control sockets status and flows try, in order: the
// --socket flag; else the configuration's control_socket; else up's, then the
// current user's proxy's.
func candidateSockets(socket, configPath string) ([]string, error) {
	if socket != "" {
		return []string{socket}, nil
	}
	cfg, err := loadClientConfig(configPath)
	if err != nil {
		return nil, err
	}
	if cfg.ControlSocket != "" {
		return []string{cfg.ControlSocket}, nil
	}
	return []string{upSocket(cfg), proxySocket(cfg)}, nil
}

// fetchControl GETs path (/status or /flows) from the first of socks that answers,
// decodes it into v and returns the raw JSON too.
func fetchControl(ctx context.Context, socks []string, path string, v any) ([]byte, error) {
	var tried []string
	for _, sock := range socks {
		raw, err := fetchOne(ctx, sock, path, v)
		if err == nil {
			return raw, nil
		}
		var ne *noDaemonError
		if !errors.As(err, &ne) {
			return nil, err
		}
		tried = append(tried, ne.Error())
	}
	return nil, fmt.Errorf("no tetherd up or proxy is running (%s)", strings.Join(tried, "; "))
}

// noDaemonError is a control socket nobody answers on.
type noDaemonError struct {
	sock string
	err  error
}

func (e *noDaemonError) Error() string {
	msg := fmt.Sprintf("control socket %s: %v", e.sock, e.err)
	if errors.Is(e.err, fs.ErrPermission) {
		msg += ": the status of 'tetherd up' needs root"
	}
	return msg
}

func fetchOne(ctx context.Context, sock, path string, v any) ([]byte, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "http://tetherd"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			return nil, &noDaemonError{sock: sock, err: unwrapOp(err)}
		}
		return nil, fmt.Errorf("control socket %s: %w", sock, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("control socket %s: %s (an older tetherd?)", sock, resp.Status)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("control socket %s answered something else: %v", sock, err)
	}
	return raw, nil
}

// unwrapOp returns the innermost cause of a *net.OpError in err, such as "no such
// file or directory".
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		var se *os.SyscallError
		if errors.As(oe.Err, &se) {
			return se.Err
		}
		return oe.Err
	}
	return err
}

// monitorOptions says where a daemon reports what it does.
type monitorOptions struct {
	// Socket is the control socket's path; its directory is created with mode
	// 0700 when missing (and must not be accessible by others when it exists).
	Socket string
	// MetricsAddr, when not empty, is the Prometheus endpoint's TCP address.
	MetricsAddr string
	// Pprof also serves Go's profiles on MetricsAddr.
	Pprof bool
}

// startMonitor serves m's control socket and, when asked, its metrics until the
// returned stop is called; stop waits for both to end and removes the socket.
func startMonitor(ctx context.Context, log *zap.Logger, m daemon.Monitor, opts monitorOptions) (stop func(), err error) {
	var lns []func(context.Context) error
	var closers []io.Closer
	fail := func(err error) (func(), error) {
		for _, c := range closers {
			c.Close()
		}
		return nil, err
	}
	if opts.Socket != "" {
		ln, err := listenControl(opts.Socket)
		if err != nil {
			return fail(err)
		}
		closers = append(closers, ln)
		lns = append(lns, func(ctx context.Context) error { return daemon.ServeControl(ctx, ln, m) })
	}
	if opts.MetricsAddr != "" {
		ln, err := net.Listen("tcp", opts.MetricsAddr)
		if err != nil {
			return fail(fmt.Errorf("metrics: %w", err))
		}
		closers = append(closers, ln)
		reg := daemon.NewRegistry(daemon.NewCollector(m))
		lns = append(lns, func(ctx context.Context) error { return daemon.ServeMetrics(ctx, ln, reg, opts.Pprof) })
		log.Info("serving metrics", zap.String("url", "http://"+ln.Addr().String()+"/metrics"))
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, serve := range lns {
		wg.Go(func() {
			if err := serve(ctx); err != nil {
				log.Warn("monitoring endpoint failed", zap.Error(err))
			}
		})
	}
	return func() {
		cancel()
		wg.Wait()
		if opts.Socket != "" {
			_ = os.Remove(opts.Socket)
		}
	}, nil
}

// listenControl listens on the Unix socket path, readable and writable by its owner
// only, in a directory only its owner can enter. A stale socket (left by a crash) is
// replaced; a live one means another daemon runs.
func listenControl(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := checkPrivateDir(dir); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another tetherd is running (or set control_socket)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// checkPrivateDir refuses a directory that others may write to, or that belongs to
// someone else: another user could swap the socket for one of their own.
func checkPrivateDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to another user (uid %d)", dir, st.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others: chmod go-w %s", dir, dir)
	}
	return nil
}
