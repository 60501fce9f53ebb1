// Package proxy is an unprivileged SOCKS5 and HTTP proxy that carries every
// connection over a tether.v1 session, for machines where 'tetherd up' cannot run
// (no root) or for one application at a time.
//
// One listener serves both protocols; the first byte of a connection decides: 0x05 is
// SOCKS5 (RFC 1928, with RFC 1929 username/password), anything else is HTTP.
//
// SOCKS5 supports CONNECT to IPv4, IPv6 and domain addresses (domains are resolved by
// the peer) and UDP ASSOCIATE (a UDP relay socket on the listener's address, one
// transport association per request, fragments dropped). BIND is answered with 0x07.
// Stream errors map to reply codes: refused 0x05, network unreachable 0x03, host
// unreachable or not found 0x04, denied by policy 0x02, timed out 0x06, else 0x01.
//
// HTTP supports CONNECT host:port (a raw tunnel, half-close preserved) and
// absolute-form requests ("GET http://host/path HTTP/1.1"), forwarded with keep-alive
// on one upstream stream per host:port; https:// URLs must use CONNECT.
//
// Usage from the command line:
//
//	tetherd proxy tether://phone:8443?token=... --listen 127.0.0.1:1080
//	curl --socks5-hostname 127.0.0.1:1080 https://example.com/
//	curl -x http://127.0.0.1:1080 http://example.com/
//
// A proxy listening on a non-loopback address must have credentials (Server.Auth) or
// Server.AllowOpen set, or Serve refuses to start.
package proxy
