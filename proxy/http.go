package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tetherd/tetherd/internal/flowtab"
	"github.com/tetherd/tetherd/transport"
	"github.com/tetherd/tetherd/transport/wire"
)

// hopHeaders are removed from requests and responses (RFC 9110 7.6.1, plus the
// proxy's own). Transfer-Encoding is handled by net/http's framing.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization",
	"Proxy-Authenticate", "TE", "Trailer", "Upgrade",
}

// removeHopHeaders deletes the hop-by-hop headers and those Connection names.
func removeHopHeaders(h http.Header) {
	for _, v := range h.Values("Connection") {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// upstream is a kept-alive stream to one origin host:port.
type upstream struct {
	st *flowStream
	br *bufio.Reader
}

// serveHTTP runs one HTTP proxy connection: CONNECT, or a keep-alive series of
// absolute-form requests, served one at a time so responses stay in request order.
func (s *Server) serveHTTP(ctx context.Context, c net.Conn, br *bufio.Reader, log *zap.Logger) error {
	ups := map[string]*upstream{}
	defer func() {
		for _, u := range ups {
			u.st.Close()
		}
	}()
	for ctx.Err() == nil {
		_ = c.SetReadDeadline(time.Now().Add(s.handshakeTimeout()))
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil // an idle keep-alive connection
			}
			httpError(c, http.StatusBadRequest, "malformed request: "+err.Error())
			return err
		}
		_ = c.SetReadDeadline(time.Time{})
		if s.Auth != nil && !s.httpAuthorized(req) {
			io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\n"+
				"Proxy-Authenticate: Basic realm=\"tetherd\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return errors.New("http: proxy authentication required")
		}
		if req.Method == http.MethodConnect {
			return s.httpConnect(ctx, c, br, req, log)
		}
		keep, err := s.forward(ctx, c, req, ups, log)
		if err != nil || !keep {
			return err
		}
	}
	return nil
}

// httpAuthorized checks Basic credentials in Proxy-Authorization.
func (s *Server) httpAuthorized(req *http.Request) bool {
	fake := &http.Request{Header: http.Header{"Authorization": req.Header.Values("Proxy-Authorization")}}
	u, p, ok := fake.BasicAuth()
	return ok && s.Auth.match(u, p)
}

// httpError writes a short text response that closes the connection.
func httpError(w io.Writer, code int, msg string) {
	body := fmt.Sprintf("%d %s: %s\n", code, http.StatusText(code), msg)
	fmt.Fprintf(w, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
}

// parseHostPort turns "host[:port]" into a wire.Addr; a name is resolved by the peer.
func parseHostPort(hostport, defPort string) (wire.Addr, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = strings.Trim(hostport, "[]"), defPort
		if port == "" {
			return wire.Addr{}, fmt.Errorf("missing port in %q", hostport)
		}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return wire.Addr{}, fmt.Errorf("bad port in %q", hostport)
	}
	a := wire.Addr{Port: uint16(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			// A zone means an interface of this machine; it cannot cross the wire.
			return wire.Addr{}, fmt.Errorf("bad host in %q: an IPv6 zone is not a destination", hostport)
		}
		a.IP = ip.Unmap()
	} else if wire.ValidName(host) {
		a.Name = host
	} else {
		return wire.Addr{}, fmt.Errorf("bad host in %q", hostport)
	}
	return a, nil
}

// httpConnect opens the tunnel for CONNECT and relays until both sides are done.
func (s *Server) httpConnect(ctx context.Context, c net.Conn, br *bufio.Reader, req *http.Request, log *zap.Logger) error {
	dst, err := parseHostPort(req.RequestURI, "")
	if err != nil {
		httpError(c, http.StatusBadRequest, err.Error())
		return err
	}
	up, log, err := s.open(ctx, c, dst, log)
	if err != nil {
		log.Debug("http connect failed", zap.Stringer("dst", dst), zap.Error(err))
		httpError(c, http.StatusBadGateway, fmt.Sprintf("cannot reach %s: %v", dst, reason(err)))
		return err
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		up.Close()
		return err
	}
	relay(c, br, up, log)
	return nil
}

// reason is the short why of an open error.
func reason(err error) string {
	var se *transport.StreamError
	if errors.As(err, &se) {
		if se.Reason != "" {
			return se.Code.String() + " (" + se.Reason + ")"
		}
		return se.Code.String()
	}
	return err.Error()
}

// forward sends one absolute-form request upstream and its response back. keep
// reports whether the client connection may carry another request.
func (s *Server) forward(ctx context.Context, c net.Conn, req *http.Request, ups map[string]*upstream, log *zap.Logger) (keep bool, err error) {
	if req.URL.Scheme != "http" || req.URL.Host == "" {
		msg := "the proxy needs an absolute http:// URL (use CONNECT for https)"
		httpError(c, http.StatusBadRequest, msg)
		return false, errors.New("http: " + msg)
	}
	dst, err := parseHostPort(req.URL.Host, "80")
	if err != nil {
		httpError(c, http.StatusBadRequest, err.Error())
		return false, err
	}
	clientClose := req.Close
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// Answer it here: the body is read from the client before the upstream
		// could say anything.
		req.Header.Del("Expect")
		if _, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return false, err
		}
	}
	removeHopHeaders(req.Header)
	req.RequestURI = ""
	req.Close = false
	if req.Host == "" {
		req.Host = req.URL.Host
	}
	replayable := req.Body == nil || req.Body == http.NoBody
	key := dst.String()

	var resp *http.Response
	for attempt := 0; ; attempt++ {
		u, reused := ups[key], true
		if u == nil {
			reused = false
			st, flog, err := s.open(ctx, c, dst, log)
			if err != nil {
				flog.Debug("http open failed", zap.Stringer("dst", dst), zap.Error(err))
				httpError(c, http.StatusBadGateway, fmt.Sprintf("cannot reach %s: %v", dst, reason(err)))
				return false, err
			}
			u = &upstream{st: st, br: bufio.NewReader(flowtab.Reader{R: st.Stream, Add: st.f.AddIn})}
			ups[key] = u
		}
		err = req.Write(flowtab.Writer{W: u.st.Stream, Add: u.st.f.AddOut})
		if err == nil {
			resp, err = http.ReadResponse(u.br, req)
			for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
				if err = resp.Write(c); err != nil {
					return false, err
				}
				resp, err = http.ReadResponse(u.br, req)
			}
		}
		if err == nil {
			break
		}
		u.st.Close()
		delete(ups, key)
		// A kept-alive stream the origin closed meanwhile: retry once on a new one.
		if reused && replayable && attempt == 0 && ctx.Err() == nil {
			continue
		}
		httpError(c, http.StatusBadGateway, fmt.Sprintf("no response from %s: %v", dst, err))
		return false, err
	}

	upClose := resp.Close
	removeHopHeaders(resp.Header)
	resp.Close = clientClose
	if resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && req.Method != http.MethodHead &&
		resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified {
		// A close-delimited body: chunk it, so the client connection stays usable.
		resp.TransferEncoding = []string{"chunked"}
	}
	werr := resp.Write(c)
	resp.Body.Close()
	if upClose || werr != nil {
		if u := ups[key]; u != nil {
			u.st.Close()
			delete(ups, key)
		}
	}
	if werr != nil {
		return false, werr
	}
	return !clientClose, nil
}
