package daemon

import (
	"strings"
	"testing"
)

// FuzzParseSize: sizes in the configuration never panic the parser, are never
// negative, ignore the unit's case, and print (as `tetherd check` and the logs show
// them) in a form that parses back to the same size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "65536", "256KiB", "16 MiB", "1gb", "9223372036854775807", "8589934592GiB", "-1", "KiB", " 1 kb ", "1.5MiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSize(s)
		if err != nil {
			return
		}
		if v < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, v)
		}
		if again, err := ParseSize(v.String()); err != nil || again != v {
			t.Fatalf("ParseSize(%q) = %d, printed %q, which parses to %d, %v", s, v, v.String(), again, err)
		}
		if up, err := ParseSize(strings.ToUpper(s)); err != nil || up != v {
			t.Fatalf("ParseSize(%q) = %d but ParseSize(%q) = %d, %v", s, v, strings.ToUpper(s), up, err)
		}
	})
}
