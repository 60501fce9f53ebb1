package daemon

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration written in configuration files as a Go duration string
// with a unit: "300ms", "10s", "2m", "1h30m". A bare number is refused, since its unit
// would be a guess.
type Duration time.Duration

// String returns the duration in Go notation without zero trailing units: "2m", not
// "2m0s".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeErrorf(n, "want a duration such as \"10s\" or \"2m\", got %s", describeNode(n))
	}
	if tag := n.ShortTag(); tag == "!!int" || tag == "!!float" {
		return nodeErrorf(n, "duration %s has no unit: write it as \"%ss\" or \"%sms\"", n.Value, n.Value, n.Value)
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return nodeErrorf(n, "invalid duration %q: want a number with a unit, such as \"300ms\", \"10s\" or \"2m\"", n.Value)
	}
	if v < 0 {
		return nodeErrorf(n, "duration %q is negative", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Size is a number of bytes, written in configuration files as an integer or as an
// integer with a unit: "512KiB", "16MiB", "1GiB" (powers of 1024) or "500kB", "10MB",
// "1GB" (powers of 1000). Units are case-insensitive; a space before the unit is
// allowed.
type Size int64

// sizeUnit returns the multiplier of a lower-case unit name.
func sizeUnit(unit string) (int64, bool) {
	switch unit {
	case "", "b":
		return 1, true
	case "kib":
		return 1 << 10, true
	case "mib":
		return 1 << 20, true
	case "gib":
		return 1 << 30, true
	case "kb":
		return 1e3, true
	case "mb":
		return 1e6, true
	case "gb":
		return 1e9, true
	}
	return 0, false
}

// ParseSize parses a byte count such as "262144", "256KiB" or "16MiB".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := sizeUnit(unit)
	if num == "" || !ok {
		return 0, fmt.Errorf("invalid size %q: want a byte count such as 65536, \"256KiB\" or \"16MiB\"", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > math.MaxInt/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(n * mult), nil
}

// String returns the size with the largest binary unit that divides it exactly, such
// as "256KiB", or a plain byte count.
func (s Size) String() string {
	for _, u := range []struct {
		name string
		n    Size
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if s != 0 && s%u.n == 0 {
			return strconv.FormatInt(int64(s/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!bool" || n.ShortTag() == "!!float" {
		return nodeErrorf(n, "want a size such as 65536 or \"256KiB\", got %s", describeNode(n))
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		return nodeErrorf(n, "%v", err)
	}
	*s = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (s Size) MarshalYAML() (any, error) { return s.String(), nil }
