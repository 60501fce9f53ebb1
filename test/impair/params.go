package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseSettings applies the key=value settings in s to a and b (the two
// directions) and returns the results. Settings are separated by white space or
// commas; "#" starts a comment up to the end of the line. A key applies to both
// directions, or with an "a." or "b." prefix to one:
//
//	delay=20ms jitter=2ms loss=1 reorder=1 reorder_hold=10ms dup=0.5
//	rate=10mbit rate_queue=50ms limit=10000 blackhole=on a.loss=5
//
// Percentages are plain numbers (1 means 1 %). rate takes bits per second with an
// optional k, m or g (powers of 1000) and an optional "bit" suffix; 0 is unlimited.
func ParseSettings(s string, a, b Params) (Params, Params, error) {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, l)
	}
	fields := strings.FieldsFunc(strings.Join(lines, " "), func(r rune) bool {
		return r == ',' || r == ' ' || r == '\t' || r == '\r'
	})
	for _, f := range fields {
		key, val, ok := strings.Cut(f, "=")
		if !ok {
			return a, b, fmt.Errorf("%q: want key=value", f)
		}
		targets := []*Params{&a, &b}
		if k, ok := strings.CutPrefix(key, "a."); ok {
			key, targets = k, []*Params{&a}
		} else if k, ok := strings.CutPrefix(key, "b."); ok {
			key, targets = k, []*Params{&b}
		}
		for _, p := range targets {
			if err := p.set(key, val); err != nil {
				return a, b, fmt.Errorf("%s: %w", f, err)
			}
		}
	}
	if err := a.Validate(); err != nil {
		return a, b, fmt.Errorf("direction a: %w", err)
	}
	if err := b.Validate(); err != nil {
		return a, b, fmt.Errorf("direction b: %w", err)
	}
	return a, b, nil
}

// set applies one setting.
func (p *Params) set(key, val string) error {
	var err error
	switch key {
	case "delay":
		p.Delay, err = time.ParseDuration(val)
	case "jitter":
		p.Jitter, err = time.ParseDuration(val)
	case "loss":
		p.Loss, err = parsePercent(val)
	case "reorder":
		p.Reorder, err = parsePercent(val)
	case "reorder_hold":
		p.ReorderHold, err = time.ParseDuration(val)
	case "dup":
		p.Dup, err = parsePercent(val)
	case "rate":
		p.Rate, err = ParseRate(val)
	case "rate_queue":
		p.RateQueue, err = time.ParseDuration(val)
	case "limit":
		p.Limit, err = strconv.Atoi(val)
	case "blackhole":
		p.Blackhole, err = parseBool(val)
	default:
		return fmt.Errorf("unknown key %q", key)
	}
	return err
}

func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil {
		return 0, err
	}
	if v < 0 || v > 100 {
		return 0, fmt.Errorf("%v is not a percentage in 0..100", v)
	}
	return v, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "1", "true", "yes":
		return true, nil
	case "off", "0", "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("%q is not on or off", s)
}

// ParseRate parses a rate in bits per second: "0", "800000", "500k", "10mbit",
// "1.5M", "1g".
func ParseRate(s string) (int64, error) {
	t := strings.TrimSuffix(strings.ToLower(s), "bit")
	mult := 1.0
	switch {
	case strings.HasSuffix(t, "k"):
		mult, t = 1e3, strings.TrimSuffix(t, "k")
	case strings.HasSuffix(t, "m"):
		mult, t = 1e6, strings.TrimSuffix(t, "m")
	case strings.HasSuffix(t, "g"):
		mult, t = 1e9, strings.TrimSuffix(t, "g")
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("rate %q: want bits per second such as 10mbit", s)
	}
	return int64(v * mult), nil
}
