package daemon

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tetherd/tetherd/transport"
)

// NewRegistry returns a Prometheus registry holding the Go runtime's and the process's
// metrics (goroutines, heap, file descriptors, CPU, RSS) and cs (NewCollector for up
// and proxy, NewServerCollector for serve). Every call returns a registry of its own:
// two daemons in one process do not share metrics.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	return reg
}

// ServeMetrics serves reg at /metrics in the Prometheus text format on ln until ctx is
// done; with profiling, also Go's profiles at /debug/pprof/ (metrics.pprof).
func ServeMetrics(ctx context.Context, ln net.Listener, reg prometheus.Gatherer, profiling bool) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if profiling {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return serveHTTP(ctx, ln, mux)
}

// collector turns a Monitor's Status into metrics when scraped: no state of its own,
// so the figures are exactly those of `tetherd status`.
type collector struct {
	m Monitor

	connected, rtt, since, bytes, flows, flowsTotal, refused, deferred, dropped, reconnects *prometheus.Desc
}

// NewCollector returns a Prometheus collector of m's status.
func NewCollector(m Monitor) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tetherd_"+name, help, labels, nil)
	}
	return &collector{
		m:          m,
		connected:  d("connected", "1 while a session to the peer is up, 0 while reconnecting."),
		rtt:        d("rtt_seconds", "Smoothed round-trip time of the session to the peer."),
		since:      d("connected_since_seconds", "Unix time the current session started (0 while reconnecting)."),
		bytes:      d("link_bytes_total", "Bytes that crossed the link to the peer, all sessions.", "direction"),
		flows:      d("flows", "Flows open now.", "proto"),
		flowsTotal: d("flows_opened_total", "Flows opened since start.", "proto"),
		refused:    d("tcp_refused_total", "TCP connections refused, unreachable or failed to dial."),
		deferred:   d("tcp_syns_deferred_total", "TCP SYNs dropped while their destination held its share of the connects in progress (retransmitted by the application)."),
		dropped:    d("udp_dropped_total", "UDP datagrams dropped."),
		reconnects: d("reconnects_total", "Sessions opened after the first."),
	}
}

// Describe sends the descriptions of every metric.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.rtt, c.since, c.bytes, c.flows, c.flowsTotal, c.refused, c.deferred, c.dropped, c.reconnects} {
		ch <- d
	}
}

// Collect reads the status and sends it as metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Status()
	gauge, counter := sender(ch).gauge, sender(ch).counter
	up, since := 0.0, 0.0
	if st.State == "connected" {
		up = 1
		if !st.ConnectedSince.IsZero() {
			since = float64(st.ConnectedSince.UnixNano()) / 1e9
		}
	}
	gauge(c.connected, up)
	gauge(c.rtt, st.RTTMillis/1000)
	gauge(c.since, since)
	counter(c.bytes, float64(st.BytesUp), "up")
	counter(c.bytes, float64(st.BytesDown), "down")
	gauge(c.flows, float64(st.TCPFlows), "tcp")
	gauge(c.flows, float64(st.UDPFlows), "udp")
	counter(c.flowsTotal, float64(st.TCPFlowsTotal), "tcp")
	counter(c.flowsTotal, float64(st.UDPFlowsTotal), "udp")
	counter(c.refused, float64(st.TCPRefused))
	counter(c.deferred, float64(st.TCPDeferred))
	counter(c.dropped, float64(st.UDPDropped))
	counter(c.reconnects, float64(st.Reconnects))
}

// sender sends the metrics of a Collect.
type sender chan<- prometheus.Metric

func (s sender) gauge(d *prometheus.Desc, v float64, labels ...string) {
	s <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func (s sender) counter(d *prometheus.Desc, v float64, labels ...string) {
	s <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

// serverCollector turns a transport.Server's counters into metrics when scraped.
type serverCollector struct {
	stats func() transport.ServerStats

	sessions, sessionsTotal, refused, bytes, streams, streamsTotal, dropped *prometheus.Desc
}

// NewServerCollector returns a Prometheus collector of the counters of the peer side
// (tetherd serve): pass a transport.Server's Stats method.
func NewServerCollector(stats func() transport.ServerStats) prometheus.Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tetherd_serve_"+name, help, labels, nil)
	}
	return &serverCollector{
		stats:         stats,
		sessions:      d("sessions", "Client sessions running now."),
		sessionsTotal: d("sessions_total", "Client sessions started."),
		refused:       d("refused_total", "Session upgrades refused.", "reason"),
		bytes:         d("bytes_total", "Stream payload bytes carried: up from clients, down to them.", "direction"),
		streams:       d("streams", "Streams open now, TCP streams and UDP/ICMP associations.", "kind"),
		streamsTotal:  d("streams_opened_total", "Streams and associations opened."),
		dropped:       d("dgrams_dropped_total", "Datagrams dropped (full queues, policy)."),
	}
}

// Describe sends the descriptions of every metric.
func (c *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessions, c.sessionsTotal, c.refused, c.bytes, c.streams, c.streamsTotal, c.dropped} {
		ch <- d
	}
}

// Collect reads the counters and sends them as metrics.
func (c *serverCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	gauge, counter := sender(ch).gauge, sender(ch).counter
	gauge(c.sessions, float64(st.Sessions))
	counter(c.sessionsTotal, float64(st.SessionsTotal))
	counter(c.refused, float64(st.RefusedToken), "token")
	counter(c.refused, float64(st.RefusedRateLimited), "rate_limited")
	counter(c.bytes, float64(st.BytesUp), "up")
	counter(c.bytes, float64(st.BytesDown), "down")
	gauge(c.streams, float64(st.StreamsOpen), "tcp")
	gauge(c.streams, float64(st.AssociationsOpen), "datagram")
	counter(c.streamsTotal, float64(st.StreamsTotal))
	counter(c.dropped, float64(st.DgramsDropped))
}
