package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// flowOptions says what flowsClient does: count flows of proto to targets (used in
// turn), at most concurrency at once, each within timeout and held open for hold.
//
//   - "tcp": connect, (hold), send 64 bytes, shut down the write side and expect
//     "got 64 bytes\n" before EOF: the reply-then-close server (port 7001);
//   - "udp": from a new socket, send 32 bytes and expect them back (UDP echo, port
//     7), sending again once if no echo came within half the timeout; (hold);
//   - "connect": a TCP connection attempt, closed at once (or after hold) when it
//     succeeds; any outcome is fine, the counts are the result.
type flowOptions struct {
	targets     []string
	proto       string
	count       int
	concurrency int
	timeout     time.Duration
	hold        time.Duration
}

// flowResult counts the outcomes of the flows.
type flowResult struct {
	Attempted, OK, Refused, Timeout, Unreachable, Other int
	FirstErr                                            error
	Elapsed                                             time.Duration
}

func (r flowResult) String() string {
	s := fmt.Sprintf("%d attempted, %d ok, %d refused, %d timed out, %d unreachable, %d other errors in %v",
		r.Attempted, r.OK, r.Refused, r.Timeout, r.Unreachable, r.Other, r.Elapsed.Round(time.Millisecond))
	if r.FirstErr != nil {
		s += fmt.Sprintf(" (first error: %v)", r.FirstErr)
	}
	return s
}

// record counts the outcome err of one flow.
func (r *flowResult) record(err error) {
	r.Attempted++
	var ne net.Error
	switch {
	case err == nil:
		r.OK++
		return
	case errors.Is(err, syscall.ECONNREFUSED):
		r.Refused++
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		r.Unreachable++
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		r.Timeout++
	default:
		r.Other++
	}
	if r.FirstErr == nil {
		r.FirstErr = err
	}
}

// flowsClient runs the flows of o and counts their outcomes.
func flowsClient(ctx context.Context, o flowOptions) (flowResult, error) {
	var one func(context.Context, string) error
	switch o.proto {
	case "tcp":
		one = func(ctx context.Context, addr string) error { return tcpFlow(ctx, addr, o.hold) }
	case "udp":
		one = func(ctx context.Context, addr string) error { return udpFlow(ctx, addr, o.timeout, o.hold) }
	case "connect":
		one = func(ctx context.Context, addr string) error { return connectFlow(ctx, addr, o.hold) }
	default:
		return flowResult{}, fmt.Errorf("unknown flow protocol %q (tcp, udp or connect)", o.proto)
	}
	if len(o.targets) == 0 || o.count < 1 || o.concurrency < 1 || o.timeout <= 0 {
		return flowResult{}, errors.New("flows: need targets, a count, a concurrency and a timeout")
	}
	t0 := time.Now()
	var (
		mu  sync.Mutex
		res flowResult
		wg  sync.WaitGroup
	)
	next := make(chan int)
	for w := 0; w < min(o.concurrency, o.count); w++ {
		wg.Go(func() {
			for i := range next {
				fctx, cancel := context.WithTimeout(ctx, o.timeout+o.hold)
				err := one(fctx, o.targets[i%len(o.targets)])
				cancel()
				mu.Lock()
				res.record(err)
				mu.Unlock()
			}
		})
	}
feed:
	for i := 0; i < o.count; i++ {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	res.Elapsed = time.Since(t0)
	return res, ctx.Err()
}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func tcpFlow(ctx context.Context, addr string, hold time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if err := sleepCtx(ctx, hold); err != nil {
		return err
	}
	msg := bytes.Repeat([]byte("f"), 64)
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	reply, err := io.ReadAll(io.LimitReader(c, 4096))
	if err != nil {
		return err
	}
	if string(reply) != "got 64 bytes\n" {
		return fmt.Errorf("reply %q, want \"got 64 bytes\\n\"", reply)
	}
	return nil
}

func udpFlow(ctx context.Context, addr string, timeout, hold time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	msg := make([]byte, 32)
	_, _ = rand.Read(msg)
	buf := make([]byte, 2048)
	var lastErr error
	for try := 0; try < 2; try++ {
		if _, err := c.Write(msg); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout / 2))
		for {
			n, err := c.Read(buf)
			if err != nil {
				lastErr = err
				break
			}
			if bytes.Equal(buf[:n], msg) {
				return sleepCtx(ctx, hold)
			}
		}
		var ne net.Error
		if !errors.As(lastErr, &ne) || !ne.Timeout() {
			return lastErr
		}
	}
	return lastErr
}

func connectFlow(ctx context.Context, addr string, hold time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = sleepCtx(ctx, hold)
	return nil
}

// splitTargets splits a comma-separated list of host:port.
func splitTargets(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
