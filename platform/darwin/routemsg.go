package darwin

import "encoding/binary"

// Routing socket messages of macOS (<net/route.h>, <net/if.h>), decoded
// here so that the filter is tested anywhere; watch_darwin.go checks the
// constants against golang.org/x/sys/unix at compile time.
const (
	rtmVersion = 5

	rtmAdd     = 0x1 // route added
	rtmDelete  = 0x2 // route deleted
	rtmChange  = 0x3 // route changed
	rtmNewAddr = 0xc // address added to an interface
	rtmDelAddr = 0xd // address removed from an interface
	rtmIfInfo  = 0xe // interface going up or down

	rtfLLInfo    = 0x400   // a neighbour (ARP/NDP) entry
	rtfWasCloned = 0x20000 // a host route cloned from a network route
)

// Offsets in the message headers: rt_msghdr has rtm_index at 4 and
// rtm_flags at 8; if_msghdr and ifa_msghdr have their interface index at
// 12. All start with msglen (2 bytes), version and type.
const (
	offType      = 3
	offRtmIndex  = 4
	offRtmFlags  = 8
	offIfmIndex  = 12
	minMsgHeader = 16
)

// routeMsgsRelevant reports whether a read from the routing socket holds a
// change of the machine's network: a route added, deleted or changed, an
// address added or removed, an interface going up or down — except on
// the interface ignore (the tunnel's utun) and except neighbour entries
// and cloned host routes, which come and go all the time. Route lookups
// (RTM_GET, also the tunnel's own `route get`) and misses are not changes.
func routeMsgsRelevant(b []byte, ignore int) bool {
	for len(b) >= minMsgHeader {
		n := int(binary.NativeEndian.Uint16(b))
		if n < minMsgHeader || n > len(b) {
			return false // malformed; the rest cannot be framed
		}
		if routeMsgRelevant(b[:n], ignore) {
			return true
		}
		b = b[n:]
	}
	return false
}

func routeMsgRelevant(m []byte, ignore int) bool {
	if m[2] != rtmVersion {
		return false
	}
	switch m[offType] {
	case rtmAdd, rtmDelete, rtmChange:
		idx := int(binary.NativeEndian.Uint16(m[offRtmIndex:]))
		flags := binary.NativeEndian.Uint32(m[offRtmFlags:])
		return idx != ignore && flags&(rtfLLInfo|rtfWasCloned) == 0
	case rtmNewAddr, rtmDelAddr, rtmIfInfo:
		return int(binary.NativeEndian.Uint16(m[offIfmIndex:])) != ignore
	}
	return false
}
