package transport

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/tetherd/tetherd/transport/wire"
)

// resolverAddrs returns the DNS servers the peer uses itself: Server.DNSServers, else
// the nameservers of /etc/resolv.conf, else of Termux's $PREFIX/etc/resolv.conf.
func (srv *Server) resolverAddrs() []netip.AddrPort {
	if len(srv.DNSServers) > 0 {
		return srv.DNSServers
	}
	paths := []string{"/etc/resolv.conf"}
	if p := os.Getenv("PREFIX"); p != "" {
		paths = append(paths, filepath.Join(p, "etc", "resolv.conf"))
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if out := parseResolvConf(data); len(out) > 0 {
			return out
		}
	}
	return nil
}

// parseResolvConf returns the nameserver lines of a resolv.conf as port-53 addresses.
func parseResolvConf(data []byte) []netip.AddrPort {
	var out []netip.AddrPort
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "nameserver" {
			continue
		}
		host, _, _ := strings.Cut(f[1], "%") // drop an IPv6 zone
		if ip, err := netip.ParseAddr(host); err == nil {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), 53))
		}
	}
	return out
}

func isResolver(a wire.Addr) bool { return a.Name == wire.ResolverName }

// dialResolver connects a TCP stream to the first of the peer's resolvers that answers.
// The egress policy does not apply: these are the peer's own servers, not the client's
// choice.
func (srv *Server) dialResolver(ctx context.Context) (net.Conn, wire.Addr, error) {
	addrs := srv.resolverAddrs()
	if len(addrs) == 0 {
		return nil, wire.Addr{}, &StreamError{Code: wire.CodeHostNotFound, Reason: "the peer knows no DNS resolver (set serve.dns_servers)"}
	}
	var d net.Dialer
	var firstErr error
	for _, a := range addrs {
		c, err := d.DialContext(ctx, "tcp", a.String())
		if err == nil {
			return c, wire.Addr{Name: wire.ResolverName, Port: 53}, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, wire.Addr{}, firstErr
}
