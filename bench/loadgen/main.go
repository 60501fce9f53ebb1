// Command loadgen is the TCP load tool of the benchmark harness (bench/run.sh). Every
// mode is bounded in count and in time, and prints one JSON line of results.
//
//	loadgen server -listen ADDR [-listen ADDR...] [-max-time 15m]
//	    an echo server: every connection gets back what it sends.
//	loadgen conns -addr HOST:PORT [-c 50] [-n 200000] [-t 5s] [-size 32]
//	    short connections, c at once: connect, send size bytes, read them back,
//	    close. Reports connections per second and p50/p99 of connect+reply.
//	loadgen rr -addr HOST:PORT [-n 200000] [-t 3s] [-size 64]
//	    ping-pong on one connection: send size bytes, read them back. Reports
//	    p50/p99/max of each round trip.
//	loadgen hold -addr HOST:PORT -n 1000 [-c 50] [-t 120s]
//	    open n connections (c at once) and hold them idle; prints a line
//	    "holding N" on standard error once they are open, then holds them until
//	    SIGTERM/SIGINT or -t, closes them all and prints its JSON line.
//	loadgen relay -listen ADDR -to HOST:PORT [-max-time 15m]
//	    a plain TCP relay: every connection is dialed on to HOST:PORT and copied
//	    both ways (half-closes passed on) by two goroutines. Two of them, one on
//	    each side of the link, are the floor of any tunnel with one user-space hop
//	    on each side: the harness measures ping-pong through them (floor).
//	loadgen get PATH < FILE.json
//	    print the value at a dotted PATH (e.g. end.sum_received.bits_per_second)
//	    of the JSON document on standard input (iperf3 -J), so that the harness
//	    needs no jq.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// result is the JSON line every mode prints.
type result struct {
	Mode     string  `json:"mode"`
	Count    int64   `json:"count"`
	Errors   int64   `json:"errors"`
	Seconds  float64 `json:"seconds"`
	PerSec   float64 `json:"per_sec,omitempty"`
	P50us    float64 `json:"p50_us,omitempty"`
	P99us    float64 `json:"p99_us,omitempty"`
	MaxUs    float64 `json:"max_us,omitempty"`
	FirstErr string  `json:"first_error,omitempty"`
	// ErrorKinds counts the errors by message (the first 5 kinds seen).
	ErrorKinds map[string]int64 `json:"error_kinds,omitempty"`
}

type listFlag []string

func (l *listFlag) String() string     { return fmt.Sprint(*l) }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen server|conns|rr|hold|relay|get [flags]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	var listen listFlag
	fs.Var(&listen, "listen", "server: address to listen on (repeatable)")
	maxTime := fs.Duration("max-time", 15*time.Minute, "server: exit after this long")
	addr := fs.String("addr", "", "the server's HOST:PORT")
	to := fs.String("to", "", "relay: dial every connection on to this HOST:PORT")
	conc := fs.Int("c", 50, "connections at once")
	n := fs.Int64("n", 200000, "at most this many operations (hold: connections)")
	t := fs.Duration("t", 5*time.Second, "at most this long")
	size := fs.Int("size", 32, "bytes per request")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	var (
		r   result
		err error
	)
	switch mode {
	case "server":
		err = serve(ctx, listen, *maxTime)
	case "relay":
		err = runRelay(ctx, listen, *to, *maxTime)
	case "conns":
		r, err = conns(ctx, *addr, *conc, *n, *t, *size)
	case "rr":
		r, err = rr(ctx, *addr, *n, *t, *size)
	case "hold":
		r, err = hold(ctx, *addr, *conc, *n, *t)
	case "get":
		err = get(os.Stdin, fs.Arg(0))
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	if mode != "server" && mode != "relay" && mode != "get" {
		r.Mode = mode
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil || r.Count == 0 {
			os.Exit(1)
		}
	}
}

func serve(ctx context.Context, addrs []string, maxTime time.Duration) error {
	if len(addrs) == 0 {
		return errors.New("server: no -listen address")
	}
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	var lns []net.Listener
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
	}
	fmt.Fprintln(os.Stderr, "loadgen server ready:", addrs)
	serveEcho(ctx, lns)
	return nil
}

// serveEcho echoes every connection lns accept until ctx ends, then closes them all
// and returns once every goroutine it started ended.
func serveEcho(ctx context.Context, lns []net.Listener) {
	var set connSet
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			acceptLoop(ctx, ln, &set, func(c net.Conn) {
				buf := make([]byte, 512)
				_, _ = io.CopyBuffer(c, c, buf)
			})
		}()
	}
	wg.Wait()
}

// connSet is the connections a server has open, for closing them all at its end.
type connSet struct {
	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
}

// add registers c; false (and c closed) when the set was closed already.
func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return false
	}
	if s.open == nil {
		s.open = map[net.Conn]struct{}{}
	}
	s.open[c] = struct{}{}
	return true
}

// remove forgets c and closes it.
func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	delete(s.open, c)
	s.mu.Unlock()
	c.Close()
}

// closeAll closes every connection, and every one added later.
func (s *connSet) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for c := range s.open {
		c.Close()
	}
}

// acceptLoop runs handle in a goroutine for every connection ln accepts, until ctx
// ends; then it closes ln and every connection in set and returns once every handler
// returned. handle's connection is closed when it returns.
func acceptLoop(ctx context.Context, ln net.Listener, set *connSet, handle func(net.Conn)) {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close(); set.closeAll() })
	defer stop()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: bounded retry rate
			continue
		}
		if !set.add(c) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer set.remove(c)
			handle(c)
		}()
	}
	wg.Wait()
}

// samples collects durations from several goroutines.
type samples struct {
	mu    sync.Mutex
	d     []time.Duration
	err   atomic.Int64
	first atomic.Value
	kinds map[string]int64 // guarded by mu
}

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *samples) fail(err error) {
	if s.err.Add(1) == 1 {
		s.first.Store(err.Error())
	}
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		msg = msg[i+2:] // "dial tcp 1.2.3.4:5: connect: connection refused" → "connection refused"
	}
	s.mu.Lock()
	if s.kinds == nil {
		s.kinds = map[string]int64{}
	}
	if _, ok := s.kinds[msg]; ok || len(s.kinds) < 5 {
		s.kinds[msg]++
	}
	s.mu.Unlock()
}

func (s *samples) result(elapsed time.Duration) result {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := result{Count: int64(len(s.d)), Errors: s.err.Load(), Seconds: elapsed.Seconds(), ErrorKinds: s.kinds}
	if v, ok := s.first.Load().(string); ok {
		r.FirstErr = v
	}
	if len(s.d) == 0 {
		return r
	}
	slices.Sort(s.d)
	q := func(p float64) float64 {
		i := int(p * float64(len(s.d)-1))
		return float64(s.d[i].Nanoseconds()) / 1e3
	}
	r.PerSec = float64(len(s.d)) / elapsed.Seconds()
	r.P50us, r.P99us, r.MaxUs = q(0.50), q(0.99), q(1)
	return r
}

// exchange sends req on c and reads len(req) bytes back into resp.
func exchange(c net.Conn, req, resp []byte) error {
	if _, err := c.Write(req); err != nil {
		return err
	}
	_, err := io.ReadFull(c, resp)
	return err
}

func conns(ctx context.Context, addr string, conc int, n int64, t time.Duration, size int) (result, error) {
	// The run's end is its context's deadline exactly: a dial or exchange cut off by
	// it fails at or after end and is not counted below. (With end taken after the
	// context, a dial failed by the deadline a moment before end, and was counted,
	// again and again until the context's timer fired: up to a hundred "i/o
	// timeout" errors at the end of a run through the tunnel, whose connects take
	// longer.)
	start := time.Now()
	end := start.Add(t)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var s samples
	var left atomic.Int64
	left.Store(n)
	d := net.Dialer{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := make([]byte, size), make([]byte, size)
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				t0 := time.Now()
				c, err := d.DialContext(ctx, "tcp", addr)
				if err == nil {
					c.SetDeadline(time.Now().Add(5 * time.Second))
					err = exchange(c, req, resp)
					c.Close()
				}
				el := time.Since(t0)
				if err != nil {
					// Cut off by the end of the run: not an error of the path.
					if ctx.Err() == nil && time.Now().Before(end) {
						s.fail(err)
					}
					continue
				}
				s.add(el)
			}
		}()
	}
	wg.Wait()
	return s.result(time.Since(start)), nil
}

func rr(ctx context.Context, addr string, n int64, t time.Duration, size int) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return result{}, err
	}
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	var s samples
	req, resp := make([]byte, size), make([]byte, size)
	start := time.Now()
	for i := int64(0); i < n && ctx.Err() == nil; i++ {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		t0 := time.Now()
		if err := exchange(c, req, resp); err != nil {
			s.fail(err)
			break
		}
		s.add(time.Since(t0))
	}
	return s.result(time.Since(start)), nil
}

func hold(ctx context.Context, addr string, conc int, n int64, t time.Duration) (result, error) {
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	var (
		mu   sync.Mutex
		held []net.Conn
		s    samples
		left atomic.Int64
		wg   sync.WaitGroup
	)
	left.Store(n)
	d := net.Dialer{Timeout: 10 * time.Second}
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil && left.Add(-1) >= 0 {
				t0 := time.Now()
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					s.fail(err)
					continue
				}
				s.add(time.Since(t0))
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	opened := time.Since(start)
	mu.Lock()
	fmt.Fprintf(os.Stderr, "holding %d\n", len(held))
	mu.Unlock()
	<-ctx.Done()
	mu.Lock()
	for _, c := range held {
		c.Close()
	}
	mu.Unlock()
	return s.result(opened), nil
}

// get prints the value at the dotted path of the JSON document read from r.
func get(r io.Reader, path string) error {
	var v any
	if err := json.NewDecoder(r).Decode(&v); err != nil {
		return err
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return fmt.Errorf("get %s: %q is not inside an object", path, k)
		}
		if v, ok = m[k]; !ok {
			return fmt.Errorf("get %s: no %q", path, k)
		}
	}
	switch x := v.(type) {
	case float64:
		fmt.Println(strconv.FormatFloat(x, 'f', -1, 64))
	default:
		fmt.Println(x)
	}
	return nil
}

// runRelay listens on the one address in addrs and relays every connection to to
// until ctx ends or maxTime passed.
func runRelay(ctx context.Context, addrs []string, to string, maxTime time.Duration) error {
	if len(addrs) != 1 || to == "" {
		return errors.New("relay: needs one -listen address and -to")
	}
	ctx, cancel := context.WithTimeout(ctx, maxTime)
	defer cancel()
	ln, err := net.Listen("tcp", addrs[0])
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "loadgen relay ready:", addrs[0], "->", to)
	relay(ctx, ln, to)
	return nil
}

// relay relays every connection ln accepts to to, until ctx ends; then it closes ln
// and every connection and returns once all its goroutines ended.
func relay(ctx context.Context, ln net.Listener, to string) {
	var set connSet
	acceptLoop(ctx, ln, &set, func(c net.Conn) {
		d, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", to)
		if err != nil || !set.add(d) {
			return
		}
		defer set.remove(d)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(d, c)
			_ = d.(*net.TCPConn).CloseWrite()
		}()
		_, _ = io.Copy(c, d)
		_ = c.(*net.TCPConn).CloseWrite()
		<-done
	})
}
