// Package shrink lets a map that grew large give its memory back once it empties. A Go
// map keeps the size it once reached: a table that held 10,000 flows keeps their
// slots after they closed, for as long as the table lives.
package shrink

// minPeak is the smallest peak worth rebuilding a map for: below it the slots cost
// less than the copy.
const minPeak = 1024

// Peak tracks the largest size a map reached since it was last built. The zero
// value is ready to use.
type Peak struct{ n int }

// Grew notes the map's size after an insert.
func (p *Peak) Grew(n int) {
	if n > p.n {
		p.n = n
	}
}

// Map returns m, or — once m holds less than a quarter of a peak of at least 1024
// entries — a copy of it sized for what it holds, from which p counts anew. Call it
// after deleting from m, never while ranging over m. A rebuild copies at most a
// third of the deletes since the peak, so the cost per delete stays constant.
func Map[M ~map[K]V, K comparable, V any](p *Peak, m M) M {
	if p.n < minPeak || len(m) >= p.n/4 {
		return m
	}
	c := make(M, len(m))
	for k, v := range m {
		c[k] = v
	}
	p.n = len(m)
	return c
}
