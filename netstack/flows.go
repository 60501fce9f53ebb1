package netstack

import "github.com/tetherd/tetherd/internal/flowtab"

// Flow describes one open TCP connection or UDP association. Its ID is the "flow"
// field of the stack's log lines about it.
type Flow = flowtab.Info

// Flows returns the open flows, oldest first. A TCP flow is listed from the moment
// its destination accepted until both directions ended; a UDP association from its
// successful dial until it is closed or idle.
func (s *Stack) Flows() []Flow { return s.flows.List() }
