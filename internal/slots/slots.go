// Package slots counts slots in use — dials in progress, say — in all and by key
// (a destination host), for a limit that is shared fairly once it gets crowded: a
// key may take any number of slots while fewer than half are in use, but once half
// are, a key that holds its share gets no more. Keys that never give their slots
// back soon (dials to a host that does not answer) then cannot take them all from
// the keys that do, while a burst to one key is not held back when there is room.
package slots

// Table is the count. The zero value is empty and ready; it is not safe for
// concurrent use (callers hold their own lock).
type Table[K comparable] struct {
	total int
	byKey map[K]int
}

// Total returns how many slots are in use.
func (t *Table[K]) Total() int { return t.total }

// Held returns how many slots k holds.
func (t *Table[K]) Held(k K) int { return t.byKey[k] }

// Crowded reports whether k must not take another slot: at least half of max are in
// use and k holds perKey or more. (Whether all of max are in use is the caller's
// own check.)
func (t *Table[K]) Crowded(k K, max, perKey int) bool {
	return 2*t.total >= max && t.byKey[k] >= perKey
}

// Take counts a slot for k.
func (t *Table[K]) Take(k K) {
	if t.byKey == nil {
		t.byKey = make(map[K]int)
	}
	t.total++
	t.byKey[k]++
}

// Release gives back a slot that Take counted for k.
func (t *Table[K]) Release(k K) {
	t.total--
	if t.byKey[k]--; t.byKey[k] <= 0 {
		delete(t.byKey, k)
	}
}
