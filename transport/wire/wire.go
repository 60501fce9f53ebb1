// Package wire encodes and decodes the frames of the tether.v1 protocol.
//
// The byte layouts and state machines are specified in docs/protocol.md at the root of
// the repository. This package depends on the standard library only, so that other
// implementations (and fuzzers) can use it without the rest of tetherd.
//
// Every Parse function validates its whole input and returns an error instead of
// panicking on malformed bytes; every Append function appends one complete frame to a
// caller-owned buffer and allocates nothing beyond growing it.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
)

// Subprotocol is the WebSocket subprotocol negotiated on the upgrade.
const Subprotocol = "tether.v1"

// HeaderLen is the size of a frame header in bytes.
const HeaderLen = 10

// MaxMessage is the largest WebSocket message either side may send.
const MaxMessage = 1 << 20

// MaxFrameLimit is the largest value a MAX_FRAME setting may take: a frame of that
// payload plus its header fills a whole message.
const MaxFrameLimit = MaxMessage - HeaderLen

// MaxWindow is the largest credit a stream may have.
const MaxWindow = 1<<31 - 1

// Type is a frame type.
type Type uint8

// Frame types.
const (
	TypeSettings Type = 0x00
	TypeOpen     Type = 0x01
	TypeReply    Type = 0x02
	TypeData     Type = 0x03
	TypeWindow   Type = 0x04
	TypeReset    Type = 0x05
	TypeDgram    Type = 0x06
	TypePing     Type = 0x07
	TypeGoAway   Type = 0x08
)

var typeNames = [...]string{"SETTINGS", "OPEN", "REPLY", "DATA", "WINDOW", "RESET", "DGRAM", "PING", "GOAWAY"}

// String returns the frame type's name from the specification.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Frame flags.
const (
	FlagFIN = 0x01 // on DATA: the sender finished sending
	FlagACK = 0x01 // on PING: this is the answer
)

// Setting identifiers.
const (
	SettingInitialWindow uint16 = 1
	SettingMaxFrame      uint16 = 2
	SettingMaxStreams    uint16 = 3
)

// ResolverName is the destination name that means "the peer's own DNS resolver": a
// UDP association or TCP stream to ResolverName port 53 carries DNS messages to the
// servers the peer itself uses (its resolv.conf, or its configuration). The .invalid
// top-level domain (RFC 6761) guarantees the name never resolves to anything else.
const ResolverName = "dns.tether.invalid"

// Proto is the protocol of a stream, as an IP protocol number.
type Proto uint8

// Stream protocols.
const (
	ProtoICMP Proto = 0x01
	ProtoTCP  Proto = 0x06
	ProtoUDP  Proto = 0x11
)

// String returns "tcp", "udp" or "icmp".
func (p Proto) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoICMP:
		return "icmp"
	}
	return "proto(" + strconv.Itoa(int(p)) + ")"
}

// Code is a result or error code carried by REPLY, RESET and GOAWAY.
type Code uint8

// Codes.
const (
	CodeOK             Code = 0
	CodeRefused        Code = 1
	CodeNetUnreachable Code = 2
	CodeHostUnreach    Code = 3
	CodeTimedOut       Code = 4
	CodeHostNotFound   Code = 5
	CodeDenied         Code = 6
	CodeLimit          Code = 7
	CodeUnsupported    Code = 8
	CodeProtocol       Code = 9
	CodeCanceled       Code = 10
	CodeInternal       Code = 11
	CodeConnReset      Code = 12
	CodeGoingAway      Code = 13
)

var codeNames = [...]string{
	"ok", "connection refused", "network unreachable", "host unreachable", "timed out",
	"host not found", "denied by policy", "limit reached", "unsupported", "protocol error",
	"canceled", "internal error", "connection reset", "going away",
}

// String returns a short human-readable description.
func (c Code) String() string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "code " + strconv.Itoa(int(c))
}

// Header is a frame header.
type Header struct {
	Type   Type
	Flags  uint8
	Stream uint32
	Length uint32
}

// ErrShort reports input that ends before the structure it should hold.
var ErrShort = errors.New("wire: truncated")

// AppendHeader appends the 10-byte encoding of h.
func AppendHeader(b []byte, h Header) []byte {
	b = append(b, byte(h.Type), h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.Stream)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// ParseHeader decodes and checks a frame header: a known type, allowed flags, a stream id
// present exactly where the type needs one, and a length within maxFrame and within the
// type's fixed size, if it has one.
func ParseHeader(b []byte, maxFrame uint32) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShort
	}
	h := Header{
		Type:   Type(b[0]),
		Flags:  b[1],
		Stream: binary.BigEndian.Uint32(b[2:]),
		Length: binary.BigEndian.Uint32(b[6:]),
	}
	return h, h.check(maxFrame)
}

func (h Header) check(maxFrame uint32) error {
	if h.Type > TypeGoAway {
		return fmt.Errorf("wire: unknown frame type 0x%02x", uint8(h.Type))
	}
	var allowed uint8
	switch h.Type {
	case TypeData:
		allowed = FlagFIN
	case TypePing:
		allowed = FlagACK
	}
	if h.Flags&^allowed != 0 {
		return fmt.Errorf("wire: %v frame with unknown flags 0x%02x", h.Type, h.Flags)
	}
	session := h.Type == TypeSettings || h.Type == TypePing || h.Type == TypeGoAway
	if session && h.Stream != 0 {
		return fmt.Errorf("wire: %v frame on stream %d, want stream 0", h.Type, h.Stream)
	}
	if !session && h.Stream == 0 {
		return fmt.Errorf("wire: %v frame on stream 0", h.Type)
	}
	if h.Length > maxFrame {
		return fmt.Errorf("wire: %v frame on stream %d: length %d exceeds MAX_FRAME %d", h.Type, h.Stream, h.Length, maxFrame)
	}
	switch h.Type {
	case TypeWindow:
		if h.Length != 4 {
			return fmt.Errorf("wire: WINDOW frame length %d, want 4", h.Length)
		}
	case TypePing:
		if h.Length != 8 {
			return fmt.Errorf("wire: PING frame length %d, want 8", h.Length)
		}
	case TypeSettings:
		if h.Length%6 != 0 {
			return fmt.Errorf("wire: SETTINGS frame length %d is not a multiple of 6", h.Length)
		}
	}
	return nil
}

// Addr is a destination or source: an IP address or a host name, and a port. Exactly one
// of IP and Name is set.
type Addr struct {
	IP   netip.Addr
	Name string
	Port uint16
}

// AddrFromAddrPort returns the Addr of ap.
func AddrFromAddrPort(ap netip.AddrPort) Addr {
	return Addr{IP: ap.Addr().Unmap(), Port: ap.Port()}
}

// AddrPort returns the address as a netip.AddrPort; it is invalid when a is a name.
func (a Addr) AddrPort() netip.AddrPort {
	return netip.AddrPortFrom(a.IP, a.Port)
}

// String returns "host:port", with brackets around IPv6 addresses.
func (a Addr) String() string {
	if a.IP.IsValid() {
		return netip.AddrPortFrom(a.IP, a.Port).String()
	}
	if a.Name == "" {
		return "<invalid>:" + strconv.Itoa(int(a.Port))
	}
	return a.Name + ":" + strconv.Itoa(int(a.Port))
}

// ErrBadName reports a host name that is empty, too long or holds characters other than
// letters, digits, '-', '.' and '_'.
var ErrBadName = errors.New("wire: malformed host name")

// ValidName reports whether s may be sent as a host name.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// AddrLen returns the encoded size of a.
func (a Addr) AddrLen() int {
	switch {
	case a.IP.Is4():
		return 1 + 4 + 2
	case a.IP.Is6():
		return 1 + 16 + 2
	}
	return 1 + 1 + len(a.Name) + 2
}

// ErrZone reports an IPv6 address with a zone ("fe80::1%eth0"): the zone names an
// interface of this machine, which means nothing to the peer, so such an address is
// refused rather than sent without it.
var ErrZone = errors.New("wire: address has a zone, which names an interface of this machine")

// AppendAddr appends the SOCKS5-style encoding of a. It fails for an invalid host name
// (ErrBadName) and an address with a zone (ErrZone).
func AppendAddr(b []byte, a Addr) ([]byte, error) {
	if a.IP.Zone() != "" {
		return b, ErrZone
	}
	switch {
	case a.IP.Is4():
		ip := a.IP.As4()
		b = append(b, 0x01)
		b = append(b, ip[:]...)
	case a.IP.Is6():
		ip := a.IP.As16()
		b = append(b, 0x04)
		b = append(b, ip[:]...)
	default:
		if !ValidName(a.Name) {
			return b, ErrBadName
		}
		b = append(b, 0x03, byte(len(a.Name)))
		b = append(b, a.Name...)
	}
	return binary.BigEndian.AppendUint16(b, a.Port), nil
}

// ParseAddr decodes an address at the start of b and returns it with its encoded size.
// A well-formed encoding of a malformed name returns an error wrapping ErrBadName.
func ParseAddr(b []byte) (Addr, int, error) {
	if len(b) < 1 {
		return Addr{}, 0, ErrShort
	}
	var a Addr
	var n int
	switch b[0] {
	case 0x01:
		if len(b) < 7 {
			return Addr{}, 0, ErrShort
		}
		a.IP = netip.AddrFrom4([4]byte(b[1:5]))
		n = 5
	case 0x04:
		if len(b) < 19 {
			return Addr{}, 0, ErrShort
		}
		a.IP = netip.AddrFrom16([16]byte(b[1:17]))
		n = 17
	case 0x03:
		if len(b) < 2 {
			return Addr{}, 0, ErrShort
		}
		l := int(b[1])
		if len(b) < 2+l+2 {
			return Addr{}, 0, ErrShort
		}
		name := string(b[2 : 2+l])
		n = 2 + l
		if !ValidName(name) {
			return Addr{}, n + 2, fmt.Errorf("%w %q", ErrBadName, name)
		}
		a.Name = name
	default:
		return Addr{}, 0, fmt.Errorf("wire: unknown address type 0x%02x", b[0])
	}
	a.Port = binary.BigEndian.Uint16(b[n:])
	return a, n + 2, nil
}

func appendReason(b []byte, reason string) []byte {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	b = append(b, byte(len(reason)))
	return append(b, reason...)
}

func parseReason(b []byte) (string, error) {
	if len(b) < 1 {
		return "", ErrShort
	}
	l := int(b[0])
	if len(b) != 1+l {
		if len(b) < 1+l {
			return "", ErrShort
		}
		return "", fmt.Errorf("wire: %d trailing bytes after reason", len(b)-1-l)
	}
	return string(b[1:]), nil
}

func reasonLen(reason string) int { return 1 + min(len(reason), 255) }
