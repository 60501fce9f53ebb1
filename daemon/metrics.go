package daemon

import (
	"context"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a Prometheus registry holding the Go runtime's and the process's
// metrics (goroutines, heap, file descriptors, CPU, RSS), and m's when m is not nil.
// Every call returns a registry of its own: two daemons in one process do not share
// metrics.
func NewRegistry(m Monitor) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if m != nil {
		reg.MustRegister(NewCollector(m))
	}
	return reg
}

// ServeMetrics serves reg at /metrics in the Prometheus text format on ln until ctx is
// done.
func ServeMetrics(ctx context.Context, ln net.Listener, reg prometheus.Gatherer) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return serveHTTP(ctx, ln, mux)
}

// collector turns a Monitor's Status into metrics when scraped: no state of its own,
// so the figures are exactly those of `tetherd status`.
type collector struct {
	m Monitor

	connected, rtt, since, bytes, flows, flowsTotal, refused, dropped, reconnects *prometheus.Desc
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
		dropped:    d("udp_dropped_total", "UDP datagrams dropped."),
		reconnects: d("reconnects_total", "Sessions opened after the first."),
	}
}

// Describe sends the descriptions of every metric.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.connected, c.rtt, c.since, c.bytes, c.flows, c.flowsTotal, c.refused, c.dropped, c.reconnects} {
		ch <- d
	}
}

// Collect reads the status and sends it as metrics.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.m.Status()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
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
	counter(c.dropped, float64(st.UDPDropped))
	counter(c.reconnects, float64(st.Reconnects))
}
