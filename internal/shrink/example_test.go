package shrink_test

import (
	"fmt"

	"github.com/tetherd/tetherd/internal/shrink"
)

// A table of open flows: note each insert, and pass the map through Map after each
// delete.
func Example() {
	var peak shrink.Peak
	flows := map[uint64]string{}
	for id := range uint64(10_000) {
		flows[id] = "open"
		peak.Grew(len(flows))
	}
	for id := range uint64(10_000) {
		delete(flows, id)
		flows = shrink.Map(&peak, flows)
	}
	fmt.Println(len(flows))
	// Output: 0
}
