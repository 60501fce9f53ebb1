package transport

import (
	"io"
	"testing"
	"time"
)

// TestServerStats: the server's counters follow a session through a transfer and
// its end (its bytes stay in the totals), and count refused tokens.
func TestServerStats(t *testing.T) {
	h := newHarness(t, func(srv *Server) { srv.Token = "right" })
	dst := listen(t, echo)

	if _, err := Dial(ctxT(t), h.url, &DialOptions{Token: "wrong"}); err == nil {
		t.Fatal("a wrong token was accepted")
	}
	if st := h.srv.Stats(); st.RefusedToken != 1 || st.Sessions != 0 || st.SessionsTotal != 0 {
		t.Fatalf("after a wrong token: %+v", st)
	}

	s := h.dial(&DialOptions{Token: "right"})
	st, err := s.OpenTCP(ctxT(t), dst)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 100000)
	go st.Write(msg)
	if _, err := io.ReadFull(st, msg); err != nil {
		t.Fatal(err)
	}
	live := h.srv.Stats()
	if live.Sessions != 1 || live.SessionsTotal != 1 || live.StreamsOpen != 1 || live.StreamsTotal != 1 ||
		live.BytesUp < 100000 || live.BytesDown < 100000 {
		t.Fatalf("during a transfer: %+v", live)
	}
	st.Close()
	s.Close()
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Stats().Sessions != 0 {
		if time.Now().After(deadline) {
			t.Fatal("session still counted after Close")
		}
		time.Sleep(5 * time.Millisecond)
	}
	after := h.srv.Stats()
	if after.SessionsTotal != 1 || after.StreamsTotal != 1 || after.StreamsOpen != 0 || after.BytesUp < live.BytesUp || after.BytesDown < live.BytesDown {
		t.Fatalf("after the session ended, totals went back: %+v (were %+v)", after, live)
	}
}
