//go:build !unix

package transport

import (
	"errors"
	"net"
	"syscall"
)

// pumpRelay is unused outside Unix: relays keep a goroutine for the destination.
type pumpRelay struct{}

func (srv *Server) newPumpRelay(*Stream, net.Conn) *pumpRelay { return nil }

func (r *pumpRelay) start() {}

// canWaitRawReadable tells whether waitRawReadable works on this OS.
const canWaitRawReadable = false

// waitRawReadable is not available outside Unix: a UDP association's socket is read
// one datagram at a time there (newBatchReader fails).
func waitRawReadable(syscall.RawConn) error { return errors.ErrUnsupported }
