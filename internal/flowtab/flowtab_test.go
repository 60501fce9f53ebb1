package flowtab

import (
	"bytes"
	"context"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestTableLifecycle(t *testing.T) {
	tab := New()
	src := netip.MustParseAddrPort("10.0.0.1:40000")
	dst := netip.MustParseAddrPort("[2001:db8::1]:443")
	a := tab.Start("tcp", src, dst)
	b := tab.StartNamed("tcp", "127.0.0.1:5555", "example.com:80")
	if a.ID() == b.ID() || a.ID() == 0 {
		t.Fatalf("ids not unique: %d %d", a.ID(), b.ID())
	}
	if n := tab.Len(); n != 0 {
		t.Fatalf("flows listed before Open: %d", n)
	}
	b.Open()
	a.Open()
	a.AddOut(10)
	a.AddIn(7)
	a.AddIn(-1) // ignored
	if tab.Count("tcp") != 2 || tab.Count("udp") != 0 {
		t.Fatalf("Count: %d tcp, %d udp", tab.Count("tcp"), tab.Count("udp"))
	}
	list := tab.List()
	if len(list) != 2 || list[0].ID != a.ID() || list[1].ID != b.ID() {
		t.Fatalf("List not ordered by id: %+v", list)
	}
	got := list[0]
	if got.Proto != "tcp" || got.Src != "10.0.0.1:40000" || got.Dst != "[2001:db8::1]:443" || got.BytesOut != 10 || got.BytesIn != 7 {
		t.Fatalf("info = %+v", got)
	}
	a.Close()
	a.Close()
	if list := tab.List(); len(list) != 1 || list[0].ID != b.ID() {
		t.Fatalf("after Close: %+v", list)
	}
	// A flow that was never opened closes without effect.
	tab.StartNamed("udp", "x", "y").Close()
	if tab.Len() != 1 {
		t.Fatal("closing an unopened flow changed the table")
	}
}

func TestConcurrentCounting(t *testing.T) {
	tab := New()
	f := tab.StartNamed("udp", "a", "b")
	f.Open()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				f.AddOut(3)
				f.AddIn(1)
				_ = tab.List()
			}
		}()
	}
	wg.Wait()
	out, in := f.Bytes()
	if out != 24000 || in != 8000 {
		t.Fatalf("bytes = %d/%d, want 24000/8000", out, in)
	}
}

func TestWriterCountsWrittenBytes(t *testing.T) {
	f := New().StartNamed("tcp", "a", "b")
	var dst bytes.Buffer
	n, err := io.Copy(Writer{W: &dst, Add: f.AddIn}, strings.NewReader("hello, flow"))
	if err != nil || n != 11 {
		t.Fatal(n, err)
	}
	if _, in := f.Bytes(); in != 11 {
		t.Fatalf("counted %d", in)
	}
	// A short write counts what was written, not what was offered.
	short := Writer{W: limitWriter{3}, Add: f.AddOut}
	if n, err := short.Write([]byte("abcdef")); n != 3 || err != io.ErrShortWrite {
		t.Fatal(n, err)
	}
	if out, _ := f.Bytes(); out != 3 {
		t.Fatalf("short write counted %d", out)
	}
}

func TestReaderCountsReadBytes(t *testing.T) {
	f := New().StartNamed("tcp", "a", "b")
	got, err := io.ReadAll(Reader{R: strings.NewReader("twelve bytes"), Add: f.AddIn})
	if err != nil || string(got) != "twelve bytes" {
		t.Fatal(got, err)
	}
	if _, in := f.Bytes(); in != 12 {
		t.Fatalf("counted %d", in)
	}
}

type limitWriter struct{ n int }

func (w limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return w.n, io.ErrShortWrite
	}
	return len(p), nil
}

func TestContextID(t *testing.T) {
	if _, ok := IDFrom(context.Background()); ok {
		t.Fatal("id in a bare context")
	}
	id, ok := IDFrom(WithID(context.Background(), 42))
	if !ok || id != 42 {
		t.Fatal(id, ok)
	}
}

// TestTableGivesMemoryBack: a table that held 100,000 flows keeps almost nothing of
// them once they closed (a Go map alone would keep its 100,000 slots, ~2.5 MiB).
func TestTableGivesMemoryBack(t *testing.T) {
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	tab := New()
	src, dst := netip.MustParseAddrPort("10.0.0.1:1"), netip.MustParseAddrPort("10.0.0.2:2")
	before := heap()
	flows := make([]*Flow, 100_000)
	for i := range flows {
		flows[i] = tab.Start("tcp", src, dst)
		flows[i].Open()
	}
	for i, f := range flows {
		f.Close()
		flows[i] = nil
	}
	after := heap()
	runtime.KeepAlive(tab)
	if grew := int64(after) - int64(before); grew > 512<<10 {
		t.Fatalf("the empty table holds %d KiB more than before its 100,000 flows, want < 512", grew>>10)
	}
}
