package transport

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestConcurrentOpensKeepIDOrder: many goroutines opening streams at once must not
// end the session. The peer requires OPENs in increasing id order; ids are taken and
// OPENs queued by different goroutines, so the two steps must be one.
func TestConcurrentOpensKeepIDOrder(t *testing.T) {
	dst := listen(t, echo)
	c := newHarness(t, nil).dial(nil)
	const workers, each = 32, 20
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				st, err := c.OpenTCP(ctx, dst)
				if err != nil {
					errs <- err
					return
				}
				st.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("OpenTCP: %v", err)
	}
	select {
	case <-c.Done():
		t.Fatalf("session ended: %v", c.Err())
	default:
	}
}
