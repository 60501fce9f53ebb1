package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// must unwraps an Append result in tests whose inputs are known to be valid.
func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// sampleMessage holds one frame of every type.
func sampleMessage(t testing.TB) []byte {
	var b []byte
	b = AppendSettings(b, []Setting{{SettingInitialWindow, 1 << 18}, {SettingMaxFrame, 1 << 16}})
	b = must(AppendOpen(b, 1, Open{Proto: ProtoTCP, Dst: Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80}}))
	b = must(AppendOpen(b, 2, Open{Proto: ProtoUDP, Dst: Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 53}}))
	b = must(AppendOpen(b, 3, Open{Proto: ProtoTCP, Dst: Addr{Name: "example.com", Port: 443}}))
	b = AppendReply(b, 1, Reply{Code: CodeOK, Addr: Addr{IP: netip.MustParseAddr("192.0.2.1"), Port: 80}})
	b = AppendReply(b, 3, Reply{Code: CodeHostNotFound, Reason: "no such host"})
	b = AppendDataHeader(b, 1, 5, false)
	b = append(b, "hello"...)
	b = AppendDataHeader(b, 1, 0, true)
	b = AppendWindow(b, 1, 65536)
	b = AppendReset(b, 1, Reset{Code: CodeCanceled, Reason: "bye"})
	b = must(AppendDgram(b, 2, Addr{IP: netip.MustParseAddr("2001:db8::1"), Port: 53}, []byte{1, 2, 3}))
	b = AppendPing(b, true, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	b = AppendGoAway(b, GoAway{LastStream: 3, Code: CodeGoingAway, Reason: "shutdown"})
	return b
}

// reencode parses a frame and encodes it again from the parsed values.
func reencode(h Header, p []byte) ([]byte, error) {
	switch h.Type {
	case TypeSettings:
		s, err := ParseSettings(p)
		if err != nil {
			return nil, err
		}
		return AppendSettings(nil, s), nil
	case TypeOpen:
		o, err := ParseOpen(p)
		if err != nil {
			return nil, err
		}
		return AppendOpen(nil, h.Stream, o)
	case TypeReply:
		r, err := ParseReply(p)
		if err != nil {
			return nil, err
		}
		return AppendReply(nil, h.Stream, r), nil
	case TypeData:
		b := AppendDataHeader(nil, h.Stream, len(p), h.Flags&FlagFIN != 0)
		return append(b, p...), nil
	case TypeWindow:
		inc, err := ParseWindow(p)
		if err != nil {
			return nil, err
		}
		return AppendWindow(nil, h.Stream, inc), nil
	case TypeReset:
		r, err := ParseReset(p)
		if err != nil {
			return nil, err
		}
		return AppendReset(nil, h.Stream, r), nil
	case TypeDgram:
		a, d, err := ParseDgram(p)
		if err != nil {
			return nil, err
		}
		return AppendDgram(nil, h.Stream, a, d)
	case TypePing:
		return AppendPing(nil, h.Flags&FlagACK != 0, [8]byte(p)), nil
	case TypeGoAway:
		g, err := ParseGoAway(p)
		if err != nil {
			return nil, err
		}
		return AppendGoAway(nil, g), nil
	}
	return nil, errors.New("unknown type")
}

func TestRoundTrip(t *testing.T) {
	msg := sampleMessage(t)
	var got []byte
	var types []Type
	err := SplitMessage(msg, 1<<16, func(h Header, p []byte) error {
		if err := CheckPayload(h, p); err != nil {
			return err
		}
		b, err := reencode(h, p)
		if err != nil {
			return err
		}
		got = append(got, b...)
		types = append(types, h.Type)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("re-encoded message differs:\n got %x\nwant %x", got, msg)
	}
	if len(types) != 13 {
		t.Fatalf("got %d frames, want 13: %v", len(types), types)
	}
}

func TestParseOpenValues(t *testing.T) {
	b := must(AppendOpen(nil, 7, Open{Proto: ProtoTCP, Dst: Addr{Name: "a-b.example_x", Port: 8080}}))
	h, err := ParseHeader(b, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ParseOpen(b[HeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	if h.Stream != 7 || o.Proto != ProtoTCP || o.Dst.Name != "a-b.example_x" || o.Dst.Port != 8080 || o.Dst.String() != "a-b.example_x:8080" {
		t.Fatalf("got %+v %+v", h, o)
	}
}

// TestBadInput lists malformed encodings; each must give an error, never a panic.
func TestBadInput(t *testing.T) {
	hdr := func(typ Type, flags uint8, stream, length uint32) []byte {
		return AppendHeader(nil, Header{Type: typ, Flags: flags, Stream: stream, Length: length})
	}
	cases := []struct {
		name string
		msg  []byte
		want string
	}{
		{"truncated header", []byte{3, 0, 0, 0}, "inside a frame header"},
		{"unknown type", hdr(0x42, 0, 1, 0), "unknown frame type 0x42"},
		{"unknown flag on DATA", hdr(TypeData, 0x80, 1, 0), "unknown flags"},
		{"flag on OPEN", hdr(TypeOpen, FlagFIN, 1, 0), "unknown flags"},
		{"DATA on stream 0", hdr(TypeData, 0, 0, 0), "on stream 0"},
		{"PING on a stream", append(hdr(TypePing, 0, 5, 8), make([]byte, 8)...), "want stream 0"},
		{"oversize frame", hdr(TypeData, 0, 1, 1<<20), "exceeds MAX_FRAME"},
		{"truncated payload", append(hdr(TypeData, 0, 1, 10), 1, 2, 3), "message ends after 3 of 10"},
		{"short WINDOW", append(hdr(TypeWindow, 0, 1, 2), 0, 1), "WINDOW frame length 2"},
		{"zero WINDOW", append(hdr(TypeWindow, 0, 1, 4), 0, 0, 0, 0), "out of range"},
		{"huge WINDOW", append(hdr(TypeWindow, 0, 1, 4), 0x80, 0, 0, 0), "out of range"},
		{"short PING", append(hdr(TypePing, 0, 0, 4), 0, 0, 0, 0), "PING frame length"},
		{"odd SETTINGS", append(hdr(TypeSettings, 0, 0, 5), 0, 0, 0, 0, 0), "multiple of 6"},
		{"empty OPEN", hdr(TypeOpen, 0, 1, 0), "truncated"},
		{"unknown atyp", append(hdr(TypeOpen, 0, 1, 4), 6, 9, 0, 0), "unknown address type"},
		{"short IPv6", append(hdr(TypeOpen, 0, 1, 5), 6, 4, 0, 0, 0), "truncated"},
		{"name overrun", append(hdr(TypeOpen, 0, 1, 5), 6, 3, 9, 'a', 'b'), "truncated"},
		{"bad name", append(hdr(TypeOpen, 0, 1, 7), 6, 3, 2, 'a', '/', 0, 80), "malformed host name"},
		{"OPEN trailing", append(hdr(TypeOpen, 0, 1, 9), 6, 1, 1, 2, 3, 4, 0, 80, 9), "trailing"},
		{"reason overrun", append(hdr(TypeReset, 0, 1, 3), 1, 5, 'x'), "truncated"},
		{"reason trailing", append(hdr(TypeReset, 0, 1, 4), 1, 1, 'x', 'y'), "trailing"},
		{"short GOAWAY", append(hdr(TypeGoAway, 0, 0, 3), 0, 0, 0), "truncated"},
		{"empty DGRAM", hdr(TypeDgram, 0, 1, 0), "truncated"},
		{"unknown proto", append(hdr(TypeOpen, 0, 1, 8), 0x30, 1, 1, 2, 3, 4, 0, 80), "unknown protocol proto(48)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := SplitMessage(c.msg, 1<<16, CheckPayload)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestAppendRejects(t *testing.T) {
	if _, err := AppendOpen(nil, 1, Open{Proto: 99, Dst: Addr{Name: "x", Port: 1}}); err == nil {
		t.Error("unknown proto accepted")
	}
	if b, err := AppendOpen([]byte{1}, 1, Open{Proto: ProtoTCP, Dst: Addr{Name: "bad name", Port: 1}}); err == nil || len(b) != 1 {
		t.Errorf("bad name: %v, buffer %x not restored", err, b)
	}
	if _, err := AppendDgram(nil, 1, Addr{Name: strings.Repeat("a", 256)}, nil); !errors.Is(err, ErrBadName) {
		t.Errorf("long name: %v", err)
	}
	zoned := Addr{IP: netip.MustParseAddr("fe80::1%eth0"), Port: 53}
	if b, err := AppendDgram([]byte{1}, 1, zoned, []byte("q")); !errors.Is(err, ErrZone) || len(b) != 1 {
		t.Errorf("zoned address: %v, buffer %x", err, b) // it used to go out without its zone
	}
	if _, err := AppendOpen(nil, 1, Open{Proto: ProtoTCP, Dst: zoned}); !errors.Is(err, ErrZone) {
		t.Errorf("zoned address in OPEN: %v", err)
	}
	rep, err := ParseReply(AppendReply(nil, 1, Reply{Addr: zoned})[HeaderLen:])
	if err != nil || rep.Addr != (Addr{IP: netip.MustParseAddr("fe80::1"), Port: 53}) {
		t.Errorf("REPLY with the peer's zoned address: %+v, %v", rep, err)
	}
	long := strings.Repeat("r", 300)
	r, err := ParseReset(AppendReset(nil, 1, Reset{Code: 1, Reason: long})[HeaderLen:])
	if err != nil || r.Reason != long[:255] {
		t.Errorf("long reason not truncated to 255: %v %d", err, len(r.Reason))
	}
}

func TestStrings(t *testing.T) {
	if TypeDgram.String() != "DGRAM" || Type(99).String() != "type(0x63)" {
		t.Error("Type.String")
	}
	if CodeRefused.String() != "connection refused" || Code(200).String() != "code 200" {
		t.Error("Code.String")
	}
	if ProtoUDP.String() != "udp" || Proto(3).String() != "proto(3)" {
		t.Error("Proto.String")
	}
	a := AddrFromAddrPort(netip.MustParseAddrPort("[::ffff:192.0.2.1]:5"))
	if a.String() != "192.0.2.1:5" {
		t.Errorf("mapped address not unmapped: %v", a)
	}
}

// FuzzMessage feeds arbitrary messages to the decoder: it must never panic, and every
// frame it accepts must encode back to the same bytes.
func FuzzMessage(f *testing.F) {
	f.Add(sampleMessage(f))
	f.Add([]byte{3, 1, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add(AppendHeader(nil, Header{Type: TypeOpen, Stream: 1, Length: 3}))
	f.Fuzz(func(t *testing.T, msg []byte) {
		_ = SplitMessage(msg, 1<<16, func(h Header, p []byte) error {
			if err := CheckPayload(h, p); err != nil {
				return err
			}
			b, err := reencode(h, p)
			if err != nil {
				t.Fatalf("CheckPayload accepted a %v frame that does not re-encode: %v", h.Type, err)
			}
			frame := append(AppendHeader(nil, h), p...)
			if !bytes.Equal(b, frame) {
				t.Fatalf("%v frame re-encodes differently:\n got %x\nwant %x", h.Type, b, frame)
			}
			return nil
		})
	})
}

// FuzzAddr checks the address decoder alone, including its reported length.
func FuzzAddr(f *testing.F) {
	f.Add([]byte{1, 127, 0, 0, 1, 0, 80})
	f.Add([]byte{3, 3, 'a', 'b', 'c', 1, 187})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, n, err := ParseAddr(b)
		if err != nil {
			return
		}
		if n > len(b) || n != a.AddrLen() {
			t.Fatalf("length %d, AddrLen %d, input %d", n, a.AddrLen(), len(b))
		}
		enc, err := AppendAddr(nil, a)
		if err != nil || !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoding %v: %x, %v; want %x", a, enc, err, b[:n])
		}
	})
}
