package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// syncBuffer is a log sink safe for the servers' goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTest starts the servers on 127.0.0.1, every one on a free port.
func startTest(t *testing.T) (*servers, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s, err := start(config{
		addrs:   []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		dnsAAAA: []netip.Addr{netip.MustParseAddr("2001:db8:100::10")},
		dnsA:    []netip.Addr{netip.MustParseAddr("198.51.100.10")},
		bigMiB:  2,
		seed:    7,
	}, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if t.Failed() {
			t.Logf("server log:\n%s", logs)
		}
	})
	return s, logs
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

func TestBigIsDeterministic(t *testing.T) {
	a, b := bigData(1, 42), bigData(1, 42)
	if !bytes.Equal(a, b) {
		t.Fatal("bigData differs between two calls with the same seed")
	}
	if c := bigData(1, 43); bytes.Equal(a, c) {
		t.Fatal("bigData is the same for two seeds")
	}
	if len(a) != 1<<20 {
		t.Fatalf("len %d, want 1 MiB", len(a))
	}
	// Not all zeros, not trivially compressible.
	if bytes.Count(a, []byte{0}) > len(a)/100 {
		t.Fatal("bigData looks too regular")
	}
}

func TestHTTP(t *testing.T) {
	s, logs := startTest(t)
	base := "http://" + s.HTTP[0].String()

	if got := string(httpGet(t, base+"/")); !strings.Contains(got, "hello") {
		t.Errorf("GET / = %q", got)
	}
	big := httpGet(t, base+"/big")
	if len(big) != 2<<20 {
		t.Fatalf("GET /big: %d bytes, want %d", len(big), 2<<20)
	}
	sum := sha256.Sum256(big)
	want := hex.EncodeToString(sum[:])
	if got := strings.TrimSpace(string(httpGet(t, base+"/big.sha256"))); got != want {
		t.Errorf("/big.sha256 = %q, sha256 of /big is %q", got, want)
	}

	body := bytes.Repeat([]byte("upload!"), 100000)
	resp, err := http.Post(base+"/upload", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	us := sha256.Sum256(body)
	if strings.TrimSpace(string(got)) != hex.EncodeToString(us[:]) {
		t.Errorf("POST /upload = %q, want %s", got, hex.EncodeToString(us[:]))
	}

	resp, err = http.Get(base + "/upload")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /upload: %s, want 405", resp.Status)
	}
	if l := logs.String(); !strings.Contains(l, "POST /upload") || !strings.Contains(l, "received 700000 bytes") {
		t.Errorf("the log does not show the upload:\n%s", l)
	}
}

func TestHalfClose(t *testing.T) {
	s, _ := startTest(t)
	for _, n := range []int{0, 1, 100000} {
		reply, err := halfCloseClient(ctx(t), s.HalfClose[0].String(), n)
		if err != nil {
			t.Errorf("%d bytes: %v", n, err)
			continue
		}
		t.Logf("%d bytes: %q", n, reply)
	}
}

func TestHalfCloseClientDetectsWrongReply(t *testing.T) {
	// A server that closes without waiting for EOF must fail the client.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.WriteString(c, "got 0 bytes\n")
			c.Close()
		}
	}()
	if _, err := halfCloseClient(ctx(t), ln.Addr().String(), 10); err == nil {
		t.Error("a wrong reply was accepted")
	}
}

func TestUDPEcho(t *testing.T) {
	s, _ := startTest(t)
	for _, size := range []int{16, 1200, 9000} {
		got, err := udpEchoClient(ctx(t), s.Echo[0].String(), 20, size, time.Second)
		if err != nil || got != 20 {
			t.Errorf("size %d: %d of 20 echoes, err %v", size, got, err)
		}
	}
}

func TestUDPEchoClientCountsLosses(t *testing.T) {
	// Nobody answers: every datagram is lost, quickly.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got, err := udpEchoClient(ctx(t), pc.LocalAddr().String(), 3, 100, 50*time.Millisecond)
	if err != nil || got != 0 {
		t.Errorf("got %d echoes from a silent server (err %v), want 0", got, err)
	}
}

func dnsQuery(t *testing.T, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	if err := b.StartQuestions(); err != nil {
		t.Fatal(err)
	}
	if err := b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}); err != nil {
		t.Fatal(err)
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// checkDNS parses resp and checks its code and answers.
func checkDNS(t *testing.T, label string, resp []byte, rcode dnsmessage.RCode, want []string) {
	t.Helper()
	var m dnsmessage.Message
	if err := m.Unpack(resp); err != nil {
		t.Errorf("%s: unpack: %v", label, err)
		return
	}
	if m.ID != 0x1234 || !m.Response || m.RCode != rcode {
		t.Errorf("%s: header %+v, want ID 0x1234, response, %v", label, m.Header, rcode)
	}
	var got []string
	for _, a := range m.Answers {
		switch r := a.Body.(type) {
		case *dnsmessage.AResource:
			got = append(got, netip.AddrFrom4(r.A).String())
		case *dnsmessage.AAAAResource:
			got = append(got, netip.AddrFrom16(r.AAAA).String())
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("%s: answers %v, want %v", label, got, want)
	}
}

func TestDNS(t *testing.T) {
	s, _ := startTest(t)
	cases := []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"internet.test.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"198.51.100.10"}},
		{"Internet.TEST.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"2001:db8:100::10"}},
		{"internet.test.", dnsmessage.TypeMX, dnsmessage.RCodeSuccess, nil},
		{"example.com.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
	}
	for _, tc := range cases {
		q := dnsQuery(t, tc.name, tc.typ)

		// UDP.
		c, err := net.Dial("udp", s.DNSUDP[0].String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(q); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		c.Close()
		if err != nil {
			t.Fatalf("udp %s %v: %v", tc.name, tc.typ, err)
		}
		checkDNS(t, "udp "+tc.name+" "+tc.typ.String(), buf[:n], tc.rcode, tc.want)

		// TCP, two queries on one connection.
		tc2, err := net.Dial("tcp", s.DNSTCP[0].String())
		if err != nil {
			t.Fatal(err)
		}
		_ = tc2.SetDeadline(time.Now().Add(5 * time.Second))
		for i := 0; i < 2; i++ {
			if _, err := tc2.Write(append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)); err != nil {
				t.Fatal(err)
			}
			var l [2]byte
			if _, err := io.ReadFull(tc2, l[:]); err != nil {
				t.Fatalf("tcp %s: %v", tc.name, err)
			}
			resp := make([]byte, int(l[0])<<8|int(l[1]))
			if _, err := io.ReadFull(tc2, resp); err != nil {
				t.Fatal(err)
			}
			checkDNS(t, "tcp "+tc.name+" "+tc.typ.String(), resp, tc.rcode, tc.want)
		}
		tc2.Close()
	}

	// Garbage gets no answer but does not stop the server.
	c, err := net.Dial("udp", s.DNSUDP[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte{1, 2, 3})
	q := dnsQuery(t, "internet.test.", dnsmessage.TypeA)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write(q)
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("after garbage: %v", err)
	}
	checkDNS(t, "after garbage", buf[:n], dnsmessage.RCodeSuccess, []string{"198.51.100.10"})
}

func TestDefaultDNSAnswersAreTheServedAddresses(t *testing.T) {
	s, err := start(config{addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, bigMiB: 1}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, _ := s.answer(dnsQuery(t, "internet.test.", dnsmessage.TypeA))
	checkDNS(t, "default A", resp, dnsmessage.RCodeSuccess, []string{"127.0.0.1"})
	resp, _ = s.answer(dnsQuery(t, "internet.test.", dnsmessage.TypeAAAA))
	checkDNS(t, "default AAAA", resp, dnsmessage.RCodeSuccess, nil)
}

func TestCloseStopsEverything(t *testing.T) {
	s, _ := startTest(t)
	// An idle connection must not keep Close waiting.
	c, err := net.Dial("tcp", s.HalfClose[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := net.DialTimeout("tcp", s.HTTP[0].String(), time.Second); err == nil {
		t.Error("HTTP still accepts connections after Close")
	}
}
