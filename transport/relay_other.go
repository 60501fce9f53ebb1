//go:build !unix

package transport

import "net"

// pumpRelay is unused outside Unix: relays keep a goroutine for the destination.
type pumpRelay struct{}

func (srv *Server) newPumpRelay(*Stream, net.Conn) *pumpRelay { return nil }

func (r *pumpRelay) start() {}
