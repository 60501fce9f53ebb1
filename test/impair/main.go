// Command impair is the impairment relay of the network-namespace suites: it sits
// in a middle namespace between LAPTOP and PHONE (see test/e2e/lib.sh,
// tt_topology_up_impaired) and delays, drops, reorders, duplicates and rate-limits
// the packets between them, because this kernel has no tc netem.
//
// It owns up to two TUN devices, one per direction. The middle namespace's policy
// routing sends what arrives from the laptop's side into the first (-a) and what
// arrives from the phone's side into the second (-b):
//
//	ip rule add iif veth-l lookup 100;  ip route add default dev imp-a table 100
//	ip rule add iif veth-p lookup 101;  ip route add default dev imp-b table 101
//
// impair reads each packet, holds it as the direction's settings say, and writes it
// back into the same device; the kernel receives it there (iif imp-a, which no rule
// matches) and forwards it by the main table to its destination. The devices may
// exist already (ip tuntap add ... mode tun): then a stopped relay is a blackhole
// and a new one takes over.
//
//	impair -a imp-a -b imp-b -delay 20ms -loss 1 -reorder 1 -seed 7 -ctl FILE
//
// At run time:
//
//	SIGHUP   reset to the command line's settings, then apply those in -ctl FILE
//	         (key=value, see ParseSettings); logs "settings #N applied: ..."
//	SIGUSR1  toggle a blackhole of both directions; logs "blackhole on|off"
//	SIGUSR2  log the counters
//	SIGINT, SIGTERM  stop; the counters are logged on exit
//
// Queues are bounded (-limit packets per direction; -rate-queue of waiting for the
// rate limiter): beyond them packets are dropped and counted as overflow.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(log.Lmicroseconds)
	log.SetPrefix("impair: ")
	if err := run(); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run() error {
	var p Params
	var rate, set string
	devA := flag.String("a", "imp-a", "TUN `DEVICE` of direction a (laptop to phone); empty: none")
	devB := flag.String("b", "imp-b", "TUN `DEVICE` of direction b (phone to laptop); empty: none")
	mtu := flag.Int("mtu", 1500, "`MTU` set on the TUN devices (0: leave it)")
	flag.DurationVar(&p.Delay, "delay", 0, "delay added to every packet")
	flag.DurationVar(&p.Jitter, "jitter", 0, "the delay varies uniformly by +-`JITTER` (never reorders)")
	flag.Float64Var(&p.Loss, "loss", 0, "`PERCENT` of packets dropped")
	flag.Float64Var(&p.Reorder, "reorder", 0, "`PERCENT` of packets held back by -reorder-hold")
	flag.DurationVar(&p.ReorderHold, "reorder-hold", DefaultReorderHold, "how long a reordered packet is held back")
	flag.Float64Var(&p.Dup, "dup", 0, "`PERCENT` of packets sent twice")
	flag.StringVar(&rate, "rate", "0", "rate limit in bits per second, e.g. 10mbit (0: none)")
	flag.DurationVar(&p.RateQueue, "rate-queue", DefaultRateQueue, "drop a packet that would wait longer than this for the rate limiter")
	flag.IntVar(&p.Limit, "limit", DefaultLimit, "most `PACKETS` queued per direction")
	flag.BoolVar(&p.Blackhole, "blackhole", false, "start with a blackhole (drop everything)")
	flag.StringVar(&set, "set", "", "more `SETTINGS` in key=value form, e.g. \"a.loss=5 b.delay=1ms\"")
	seed := flag.Uint64("seed", 1, "`SEED` of the random choices")
	ctl := flag.String("ctl", "", "settings `FILE` applied on SIGHUP")
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	var err error
	if p.Rate, err = ParseRate(rate); err != nil {
		return err
	}
	base := map[string]Params{}
	if base["a"], base["b"], err = ParseSettings(set, p, p); err != nil {
		return fmt.Errorf("-set: %w", err)
	}

	devs := map[string]device{}
	for name, ifname := range map[string]string{"a": *devA, "b": *devB} {
		if ifname == "" {
			continue
		}
		f, err := openTUN(ifname, *mtu)
		if err != nil {
			for _, d := range devs {
				d.Close()
			}
			return err
		}
		devs[name] = f
	}
	if len(devs) == 0 {
		return fmt.Errorf("no device: give -a and/or -b")
	}
	r := newRelay(devs, base, *seed)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- r.run(ctx) }()
	log.Printf("ready: a=%q b=%q seed %d\n%s", *devA, *devB, *seed, r.report())

	generation := 0
	for {
		select {
		case err := <-done:
			log.Printf("stopped: %v\n%s", err, r.report())
			return err
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				generation++
				if err := reload(r, base, *ctl); err != nil {
					log.Printf("settings #%d NOT applied: %v", generation, err)
					continue
				}
				cur := r.params()
				log.Printf("settings #%d applied: a: %v; b: %v", generation, cur["a"], cur["b"])
			case syscall.SIGUSR1:
				on := r.toggleBlackhole()
				log.Printf("blackhole %s", map[bool]string{true: "on", false: "off"}[on])
			case syscall.SIGUSR2:
				log.Printf("counters at %s:\n%s", time.Now().Format(time.TimeOnly), r.report())
			default:
				log.Printf("received %v, stopping", sig)
				cancel()
				err := <-done
				log.Printf("counters on exit:\n%s", r.report())
				return err
			}
		}
	}
}

// reload resets r to base, then applies the settings in file (if any).
func reload(r *relay, base map[string]Params, file string) error {
	s := ""
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		s = string(b)
	}
	a, b, err := ParseSettings(s, base["a"], base["b"])
	if err != nil {
		return err
	}
	r.set(map[string]Params{"a": a, "b": b})
	return nil
}
