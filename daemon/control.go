package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/tetherd/tetherd/netstack"
)

// Flow is one open flow as `tetherd flows` lists it. Its ID is the "flow" field of
// the log lines about it.
type Flow = netstack.Flow

// Monitor is what a control socket and the metrics report: a Client (tetherd up), or
// the proxy (tetherd proxy).
type Monitor interface {
	Status() Status
	Flows() []Flow
}

// ControlHandler serves m as JSON: GET /status and GET /flows.
func ControlHandler(m Monitor) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, m.Status())
	})
	mux.HandleFunc("GET /flows", func(w http.ResponseWriter, r *http.Request) {
		fl := m.Flows()
		if fl == nil {
			fl = []Flow{}
		}
		writeJSON(w, fl)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ServeControl serves ControlHandler(m) on ln until ctx is done, then closes ln. The
// listener is meant to be a Unix socket only its owner can reach (the caller sets its
// permissions): the flows name the machine's connections.
func ServeControl(ctx context.Context, ln net.Listener, m Monitor) error {
	return serveHTTP(ctx, ln, ControlHandler(m))
}

// serveHTTP serves h on ln until ctx is done (then shuts down within a second) or
// serving fails.
func serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
		case <-done:
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	close(done)
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
