package daemon_test

import (
	"context"

	"github.com/tetherd/tetherd/daemon"
)

// A program that embeds the client and wants what `tetherd up` does with GOMAXPROCS
// (one thread while the load is light, every core under load) runs a governor for as
// long as the tunnel runs. GOMAXPROCS is the whole process's: leave this out if the
// program has other uses for its cores.
func ExampleProcsGovernor() {
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&daemon.ProcsGovernor{}).Run(ctx) // sets GOMAXPROCS back when ctx ends
	}()

	// ... run the client ...

	stop()
	<-done
}
