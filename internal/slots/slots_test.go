package slots

import "testing"

func TestCrowded(t *testing.T) {
	var tab Table[string]
	const max, perKey = 8, 2
	// Below half, a key may take any number.
	for i := range 4 {
		if tab.Crowded("dead", max, perKey) {
			t.Fatalf("crowded with %d of %d in use", i, max)
		}
		tab.Take("dead")
	}
	// Half in use: the key holding its share is refused, others are not.
	if !tab.Crowded("dead", max, perKey) {
		t.Fatal("a key holding 4 of 8 was let take another")
	}
	if tab.Crowded("alive", max, perKey) {
		t.Fatal("a key holding nothing was refused")
	}
	tab.Take("alive")
	tab.Take("alive")
	if !tab.Crowded("alive", max, perKey) || tab.Total() != 6 || tab.Held("alive") != 2 {
		t.Fatalf("after two for alive: total %d, alive %d", tab.Total(), tab.Held("alive"))
	}
	// Released slots come back, and an empty key leaves no entry.
	tab.Release("alive")
	tab.Release("alive")
	tab.Release("dead")
	if tab.Crowded("dead", max, perKey) {
		t.Fatal("below half again, the key was still refused")
	}
	if _, ok := tab.byKey["alive"]; ok || tab.Total() != 3 {
		t.Fatalf("after the releases: %v, total %d", tab.byKey, tab.Total())
	}
}
