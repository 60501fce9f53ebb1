package transport

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/tetherd/tetherd/transport/wire"
)

// Errors returned by sessions and streams.
var (
	// ErrSessionClosed is returned by operations on a session that has ended; the
	// session's Err tells why.
	ErrSessionClosed = errors.New("transport: session closed")
	// ErrGoingAway is returned by Open on a session that is shutting down: open the
	// stream on a new session.
	ErrGoingAway = errors.New("transport: session is going away")
	// ErrUnauthorized is returned by Dial when the peer rejected the token.
	ErrUnauthorized = errors.New("peer rejected the token")
	// ErrVersionMismatch is returned by Dial when the peer does not speak tether.v1.
	ErrVersionMismatch = errors.New("protocol version mismatch")
	// ErrTimeout is returned when a stream deadline passes; it satisfies
	// os.ErrDeadlineExceeded's Timeout() contract.
	ErrTimeout error = timeoutError{}
)

// Permanent reports whether a Dial error will not go away by retrying: a rejected
// token, a certificate that does not match the pin, another protocol version, or a
// malformed peer URI. Network errors are not permanent.
func Permanent(err error) bool {
	var pm *PinMismatchError
	var ue uriError
	return errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrVersionMismatch) ||
		errors.As(err, &pm) || errors.As(err, &ue)
}

// uriError marks a malformed peer URI without changing its message.
type uriError struct{ error }

func (e uriError) Unwrap() error { return e.error }

type timeoutError struct{}

func (timeoutError) Error() string   { return "transport: i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

// StreamError is the error of a stream that the other side refused or reset, or that
// this side reset. Code says what happened; it is never a clean end of stream.
type StreamError struct {
	Code   wire.Code
	Reason string
	// Remote is true when the other side sent the REPLY or RESET.
	Remote bool
	// Open is true when the error is the answer to OPEN (the stream never opened).
	Open bool
}

func (e *StreamError) Error() string {
	var what string
	switch {
	case e.Open:
		what = "open refused by peer"
	case e.Remote:
		what = "stream reset by peer"
	default:
		what = "stream reset"
	}
	if e.Reason != "" {
		return fmt.Sprintf("transport: %s: %v: %s", what, e.Code, e.Reason)
	}
	return fmt.Sprintf("transport: %s: %v", what, e.Code)
}

// Unwrap maps the code to the errno an application would see from a kernel socket, so
// errors.Is(err, syscall.ECONNREFUSED) works.
func (e *StreamError) Unwrap() error {
	switch e.Code {
	case wire.CodeRefused:
		return syscall.ECONNREFUSED
	case wire.CodeNetUnreachable:
		return syscall.ENETUNREACH
	case wire.CodeHostUnreach:
		return syscall.EHOSTUNREACH
	case wire.CodeTimedOut:
		return syscall.ETIMEDOUT
	case wire.CodeDenied:
		return syscall.EACCES
	case wire.CodeConnReset, wire.CodeCanceled, wire.CodeProtocol, wire.CodeInternal:
		return syscall.ECONNRESET
	case wire.CodeGoingAway:
		return ErrGoingAway
	}
	return nil
}

// SessionError is why a session ended abnormally.
type SessionError struct {
	Reason string
	Err    error
}

func (e *SessionError) Error() string {
	if e.Err != nil {
		return "transport: session: " + e.Reason + ": " + e.Err.Error()
	}
	return "transport: session: " + e.Reason
}

func (e *SessionError) Unwrap() error { return e.Err }

// protocolError is a session-fatal violation of the protocol by the other side.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return e.msg }

func protoErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}
