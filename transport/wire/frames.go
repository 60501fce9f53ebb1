package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Setting is one entry of a SETTINGS frame.
type Setting struct {
	ID    uint16
	Value uint32
}

// AppendSettings appends a SETTINGS frame.
func AppendSettings(b []byte, settings []Setting) []byte {
	b = AppendHeader(b, Header{Type: TypeSettings, Length: uint32(6 * len(settings))})
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, s.ID)
		b = binary.BigEndian.AppendUint32(b, s.Value)
	}
	return b
}

// ParseSettings decodes a SETTINGS payload.
func ParseSettings(p []byte) ([]Setting, error) {
	if len(p)%6 != 0 {
		return nil, fmt.Errorf("wire: SETTINGS payload length %d is not a multiple of 6", len(p))
	}
	out := make([]Setting, 0, len(p)/6)
	for ; len(p) > 0; p = p[6:] {
		out = append(out, Setting{ID: binary.BigEndian.Uint16(p), Value: binary.BigEndian.Uint32(p[2:])})
	}
	return out, nil
}

// Open is the payload of an OPEN frame.
type Open struct {
	Proto Proto
	Dst   Addr
}

// AppendOpen appends an OPEN frame for stream.
func AppendOpen(b []byte, stream uint32, o Open) ([]byte, error) {
	if o.Proto != ProtoTCP && o.Proto != ProtoUDP && o.Proto != ProtoICMP {
		return b, fmt.Errorf("wire: unknown protocol %v", o.Proto)
	}
	start := len(b)
	b = AppendHeader(b, Header{Type: TypeOpen, Stream: stream, Length: uint32(1 + o.Dst.AddrLen())})
	b = append(b, byte(o.Proto))
	b, err := AppendAddr(b, o.Dst)
	if err != nil {
		return b[:start], err
	}
	return b, nil
}

// ErrUnknownProto reports an OPEN for a protocol this version does not define.
var ErrUnknownProto = errors.New("wire: unknown protocol")

// ParseOpen decodes an OPEN payload. A well-formed frame whose host name is malformed
// (ErrBadName) or whose protocol is unknown (ErrUnknownProto) returns the Open and a
// wrapped error, so the receiver can refuse just this stream; any other error is a
// malformed frame.
func ParseOpen(p []byte) (Open, error) {
	if len(p) < 1 {
		return Open{}, ErrShort
	}
	o := Open{Proto: Proto(p[0])}
	a, n, err := ParseAddr(p[1:])
	if err != nil && !errors.Is(err, ErrBadName) {
		return Open{}, err
	}
	if n != len(p)-1 {
		return Open{}, fmt.Errorf("wire: OPEN has %d trailing bytes", len(p)-1-n)
	}
	o.Dst = a
	if err == nil && o.Proto != ProtoTCP && o.Proto != ProtoUDP && o.Proto != ProtoICMP {
		err = fmt.Errorf("%w %v", ErrUnknownProto, o.Proto)
	}
	return o, err
}

// Reply is the payload of a REPLY frame.
type Reply struct {
	Code   Code
	Addr   Addr // the address the peer connected to; may be the zero Addr on error
	Reason string
}

// AppendReply appends a REPLY frame for stream. A zero Addr is sent as 0.0.0.0:0, an
// address's zone is left out.
func AppendReply(b []byte, stream uint32, r Reply) []byte {
	a := r.Addr
	a.IP = a.IP.WithZone("") // the peer's own interface: nothing the client could use
	if !a.IP.IsValid() && !ValidName(a.Name) {
		a = Addr{IP: netip.IPv4Unspecified()}
	}
	b = AppendHeader(b, Header{Type: TypeReply, Stream: stream, Length: uint32(1 + a.AddrLen() + reasonLen(r.Reason))})
	b = append(b, byte(r.Code))
	b, _ = AppendAddr(b, a) // a is valid by construction
	return appendReason(b, r.Reason)
}

// ParseReply decodes a REPLY payload.
func ParseReply(p []byte) (Reply, error) {
	if len(p) < 1 {
		return Reply{}, ErrShort
	}
	r := Reply{Code: Code(p[0])}
	a, n, err := ParseAddr(p[1:])
	if err != nil {
		return Reply{}, err
	}
	r.Addr = a
	r.Reason, err = parseReason(p[1+n:])
	return r, err
}

// AppendDataHeader appends the header of a DATA frame that carries n bytes; the caller
// appends the bytes.
func AppendDataHeader(b []byte, stream uint32, n int, fin bool) []byte {
	var flags uint8
	if fin {
		flags = FlagFIN
	}
	return AppendHeader(b, Header{Type: TypeData, Flags: flags, Stream: stream, Length: uint32(n)})
}

// AppendWindow appends a WINDOW frame.
func AppendWindow(b []byte, stream, increment uint32) []byte {
	b = AppendHeader(b, Header{Type: TypeWindow, Stream: stream, Length: 4})
	return binary.BigEndian.AppendUint32(b, increment)
}

// ParseWindow decodes a WINDOW payload.
func ParseWindow(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("wire: WINDOW payload length %d, want 4", len(p))
	}
	inc := binary.BigEndian.Uint32(p)
	if inc == 0 || inc > MaxWindow {
		return 0, fmt.Errorf("wire: WINDOW increment %d out of range", inc)
	}
	return inc, nil
}

// Reset is the payload of a RESET frame.
type Reset struct {
	Code   Code
	Reason string
}

// AppendReset appends a RESET frame.
func AppendReset(b []byte, stream uint32, r Reset) []byte {
	b = AppendHeader(b, Header{Type: TypeReset, Stream: stream, Length: uint32(1 + reasonLen(r.Reason))})
	b = append(b, byte(r.Code))
	return appendReason(b, r.Reason)
}

// ParseReset decodes a RESET payload.
func ParseReset(p []byte) (Reset, error) {
	if len(p) < 1 {
		return Reset{}, ErrShort
	}
	reason, err := parseReason(p[1:])
	return Reset{Code: Code(p[0]), Reason: reason}, err
}

// AppendDgram appends a DGRAM frame carrying data to or from addr.
func AppendDgram(b []byte, stream uint32, addr Addr, data []byte) ([]byte, error) {
	start := len(b)
	b = AppendHeader(b, Header{Type: TypeDgram, Stream: stream, Length: uint32(addr.AddrLen() + len(data))})
	b, err := AppendAddr(b, addr)
	if err != nil {
		return b[:start], err
	}
	return append(b, data...), nil
}

// ParseDgram decodes a DGRAM payload. The returned data aliases p.
func ParseDgram(p []byte) (Addr, []byte, error) {
	a, n, err := ParseAddr(p)
	if err != nil {
		return Addr{}, nil, err
	}
	return a, p[n:], nil
}

// AppendPing appends a PING frame.
func AppendPing(b []byte, ack bool, data [8]byte) []byte {
	var flags uint8
	if ack {
		flags = FlagACK
	}
	b = AppendHeader(b, Header{Type: TypePing, Flags: flags, Length: 8})
	return append(b, data[:]...)
}

// GoAway is the payload of a GOAWAY frame.
type GoAway struct {
	LastStream uint32
	Code       Code
	Reason     string
}

// AppendGoAway appends a GOAWAY frame.
func AppendGoAway(b []byte, g GoAway) []byte {
	b = AppendHeader(b, Header{Type: TypeGoAway, Length: uint32(5 + reasonLen(g.Reason))})
	b = binary.BigEndian.AppendUint32(b, g.LastStream)
	b = append(b, byte(g.Code))
	return appendReason(b, g.Reason)
}

// ParseGoAway decodes a GOAWAY payload.
func ParseGoAway(p []byte) (GoAway, error) {
	if len(p) < 5 {
		return GoAway{}, ErrShort
	}
	reason, err := parseReason(p[5:])
	return GoAway{LastStream: binary.BigEndian.Uint32(p), Code: Code(p[4]), Reason: reason}, err
}

// CheckPayload fully decodes the payload of a frame with header h and reports whether it
// is well formed. DATA and PING payloads are always well formed once the header is.
func CheckPayload(h Header, p []byte) error {
	var err error
	switch h.Type {
	case TypeSettings:
		_, err = ParseSettings(p)
	case TypeOpen:
		_, err = ParseOpen(p)
	case TypeReply:
		_, err = ParseReply(p)
	case TypeWindow:
		_, err = ParseWindow(p)
	case TypeReset:
		_, err = ParseReset(p)
	case TypeDgram:
		_, _, err = ParseDgram(p)
	case TypeGoAway:
		_, err = ParseGoAway(p)
	}
	return err
}

// SplitMessage walks the frames of one WebSocket message, checking each header against
// maxFrame, and calls fn with the header and the payload (which aliases msg). A message
// that ends inside a frame is an error: frames never span messages.
func SplitMessage(msg []byte, maxFrame uint32, fn func(Header, []byte) error) error {
	for len(msg) > 0 {
		if len(msg) < HeaderLen {
			return fmt.Errorf("wire: message ends inside a frame header (%d bytes left)", len(msg))
		}
		h, err := ParseHeader(msg, maxFrame)
		if err != nil {
			return err
		}
		msg = msg[HeaderLen:]
		if uint64(h.Length) > uint64(len(msg)) {
			return fmt.Errorf("wire: %v frame on stream %d: message ends after %d of %d payload bytes", h.Type, h.Stream, len(msg), h.Length)
		}
		if err := fn(h, msg[:h.Length]); err != nil {
			return err
		}
		msg = msg[h.Length:]
	}
	return nil
}
