package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tetherd/tetherd/transport"
)

// fakeMonitor is a Monitor with a fixed status.
type fakeMonitor struct{ st Status }

func (m fakeMonitor) Status() Status { return m.st }
func (m fakeMonitor) Flows() []Flow  { return nil }

func TestCollectorMatchesStatus(t *testing.T) {
	since := time.Unix(1700000000, 500_000_000)
	m := fakeMonitor{Status{
		State: "connected", ConnectedSince: since, RTTMillis: 12.5,
		BytesUp: 1000, BytesDown: 2000, TCPFlows: 3, UDPFlows: 4,
		TCPFlowsTotal: 30, UDPFlowsTotal: 40, TCPRefused: 5, TCPDeferred: 8, UDPDropped: 6, Reconnects: 7,
	}}
	want := `
# HELP tetherd_connected 1 while a session to the peer is up, 0 while reconnecting.
# TYPE tetherd_connected gauge
tetherd_connected 1
# HELP tetherd_connected_since_seconds Unix time the current session started (0 while reconnecting).
# TYPE tetherd_connected_since_seconds gauge
tetherd_connected_since_seconds 1.7000000005e+09
# HELP tetherd_flows Flows open now.
# TYPE tetherd_flows gauge
tetherd_flows{proto="tcp"} 3
tetherd_flows{proto="udp"} 4
# HELP tetherd_flows_opened_total Flows opened since start.
# TYPE tetherd_flows_opened_total counter
tetherd_flows_opened_total{proto="tcp"} 30
tetherd_flows_opened_total{proto="udp"} 40
# HELP tetherd_link_bytes_total Bytes that crossed the link to the peer, all sessions.
# TYPE tetherd_link_bytes_total counter
tetherd_link_bytes_total{direction="down"} 2000
tetherd_link_bytes_total{direction="up"} 1000
# HELP tetherd_reconnects_total Sessions opened after the first.
# TYPE tetherd_reconnects_total counter
tetherd_reconnects_total 7
# HELP tetherd_rtt_seconds Smoothed round-trip time of the session to the peer.
# TYPE tetherd_rtt_seconds gauge
tetherd_rtt_seconds 0.0125
# HELP tetherd_tcp_refused_total TCP connections refused, unreachable or failed to dial.
# TYPE tetherd_tcp_refused_total counter
tetherd_tcp_refused_total 5
# HELP tetherd_tcp_syns_deferred_total TCP SYNs dropped while their destination held its share of the connects in progress (retransmitted by the application).
# TYPE tetherd_tcp_syns_deferred_total counter
tetherd_tcp_syns_deferred_total 8
# HELP tetherd_udp_dropped_total UDP datagrams dropped.
# TYPE tetherd_udp_dropped_total counter
tetherd_udp_dropped_total 6
`
	if err := testutil.CollectAndCompare(NewCollector(m), strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Reconnecting: not connected, no start time.
	m.st.State = "reconnecting"
	if err := testutil.CollectAndCompare(NewCollector(m), strings.NewReader(`
# HELP tetherd_connected 1 while a session to the peer is up, 0 while reconnecting.
# TYPE tetherd_connected gauge
tetherd_connected 0
# HELP tetherd_connected_since_seconds Unix time the current session started (0 while reconnecting).
# TYPE tetherd_connected_since_seconds gauge
tetherd_connected_since_seconds 0
`), "tetherd_connected", "tetherd_connected_since_seconds"); err != nil {
		t.Fatal(err)
	}
}

// TestServeMetricsOfARealClient scrapes a running client over HTTP: its flows and
// bytes are there, next to the Go runtime's metrics.
func TestServeMetricsOfARealClient(t *testing.T) {
	p := newPeerRig(t, "")
	c, app := startClient(t, p, "")
	flow, err := app.DialContextTCPAddrPort(ctx10(t), netip.MustParseAddrPort("198.51.100.7:80"))
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Close()
	flow.Write(make([]byte, 5000))
	io.ReadFull(flow, make([]byte, 5000))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- ServeMetrics(ctx, ln, NewRegistry(NewCollector(c)), false) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"tetherd_connected 1\n",
		`tetherd_flows{proto="tcp"} 1` + "\n",
		`tetherd_flows_opened_total{proto="tcp"} 1` + "\n",
		"go_goroutines ",
		"process_resident_memory_bytes ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

// TestServeMetricsPprof: Go's profiles are served next to the metrics only when asked.
func TestServeMetricsPprof(t *testing.T) {
	for _, profiling := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- ServeMetrics(ctx, ln, NewRegistry(), profiling) }()
		hc := &http.Client{Timeout: 10 * time.Second}
		resp, err := hc.Get("http://" + ln.Addr().String() + "/debug/pprof/goroutine?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		hc.CloseIdleConnections()
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
		got := resp.StatusCode == http.StatusOK && strings.Contains(string(body), "goroutine profile:")
		if got != profiling {
			t.Errorf("profiling %v: GET /debug/pprof/goroutine = %d %.80q", profiling, resp.StatusCode, body)
		}
	}
}

// TestRegistriesAreIndependent: two registries (two daemons in one process) register
// the same names without a conflict, and each reports its own monitor.
func TestRegistriesAreIndependent(t *testing.T) {
	for _, n := range []int{1, 2} {
		reg := NewRegistry(NewCollector(fakeMonitor{Status{TCPFlows: n}}))
		want := fmt.Sprintf(`
# HELP tetherd_flows Flows open now.
# TYPE tetherd_flows gauge
tetherd_flows{proto="tcp"} %d
tetherd_flows{proto="udp"} 0
`, n)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "tetherd_flows"); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerCollector(t *testing.T) {
	st := transport.ServerStats{Sessions: 2, SessionsTotal: 9, RefusedToken: 3, RefusedRateLimited: 40,
		BytesUp: 100, BytesDown: 2000, StreamsOpen: 5, AssociationsOpen: 1, StreamsTotal: 77, DgramsDropped: 4}
	want := `
# HELP tetherd_serve_refused_total Session upgrades refused.
# TYPE tetherd_serve_refused_total counter
tetherd_serve_refused_total{reason="rate_limited"} 40
tetherd_serve_refused_total{reason="token"} 3
# HELP tetherd_serve_sessions Client sessions running now.
# TYPE tetherd_serve_sessions gauge
tetherd_serve_sessions 2
# HELP tetherd_serve_streams Streams open now, TCP streams and UDP/ICMP associations.
# TYPE tetherd_serve_streams gauge
tetherd_serve_streams{kind="datagram"} 1
tetherd_serve_streams{kind="tcp"} 5
# HELP tetherd_serve_bytes_total Stream payload bytes carried: up from clients, down to them.
# TYPE tetherd_serve_bytes_total counter
tetherd_serve_bytes_total{direction="down"} 2000
tetherd_serve_bytes_total{direction="up"} 100
`
	c := NewServerCollector(func() transport.ServerStats { return st })
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"tetherd_serve_refused_total", "tetherd_serve_sessions", "tetherd_serve_streams", "tetherd_serve_bytes_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c); n != 10 {
		t.Errorf("%d metrics, want 10", n)
	}
}
