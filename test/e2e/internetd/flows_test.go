package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

func TestFlowsClientTCPAndUDP(t *testing.T) {
	s, _ := startTest(t)
	ctx := context.Background()
	res, err := flowsClient(ctx, flowOptions{
		targets: []string{s.HalfClose[0].String()}, proto: "tcp", count: 40, concurrency: 8, timeout: 5 * time.Second,
	})
	if err != nil || res.OK != 40 || res.Attempted != 40 {
		t.Fatalf("tcp flows: %v (%v)", res, err)
	}
	res, err = flowsClient(ctx, flowOptions{
		targets: []string{s.Echo[0].String()}, proto: "udp", count: 40, concurrency: 8, timeout: 5 * time.Second,
	})
	if err != nil || res.OK != 40 {
		t.Fatalf("udp flows: %v (%v)", res, err)
	}
}

func TestFlowsClientCountsFailures(t *testing.T) {
	s, _ := startTest(t)
	// A port nobody listens on: take one and close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	res, err := flowsClient(context.Background(), flowOptions{
		targets: []string{s.HalfClose[0].String(), closed}, proto: "connect", count: 10, concurrency: 2, timeout: 5 * time.Second,
	})
	if err != nil || res.OK != 5 || res.Refused != 5 || res.FirstErr == nil {
		t.Fatalf("connect flows: %v (%v)", res, err)
	}
	// The echo server is not the reply-then-close server: tcp flows to the HTTP
	// port fail on the reply.
	res, _ = flowsClient(context.Background(), flowOptions{
		targets: []string{s.HTTP[0].String()}, proto: "tcp", count: 2, concurrency: 1, timeout: 5 * time.Second,
	})
	if res.OK != 0 || res.Other != 2 || !strings.Contains(res.String(), "first error") {
		t.Fatalf("tcp flows to HTTP: %v", res)
	}
}

func TestFlowsClientRejectsBadOptions(t *testing.T) {
	for _, o := range []flowOptions{
		{targets: []string{"127.0.0.1:1"}, proto: "sctp", count: 1, concurrency: 1, timeout: time.Second},
		{proto: "tcp", count: 1, concurrency: 1, timeout: time.Second},
		{targets: []string{"127.0.0.1:1"}, proto: "tcp", count: 0, concurrency: 1, timeout: time.Second},
	} {
		if _, err := flowsClient(context.Background(), o); err == nil {
			t.Errorf("flowsClient(%+v): no error", o)
		}
	}
}
