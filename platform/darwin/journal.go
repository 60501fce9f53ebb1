package darwin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// journalName is the journal's file name inside Config.JournalDir.
const journalName = "journal.json"

// journalVersion is the format version of journal.json. It is not the
// Linux journal's format: the two never meet.
const journalVersion = 1

// journal describes everything Up is about to change, written before the
// first change so that Down can undo it after the process died.
type journal struct {
	Version int       `json:"version"`
	OS      string    `json:"os"` // "darwin"
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`
	// TUN and TUNIndex identify the utun. It is destroyed when its owner
	// closes it or dies, and its addresses and routes go with it.
	TUN      string `json:"tun"`
	TUNIndex int    `json:"tun_index"`
	// Changes are the changes in the order Up makes them.
	Changes []change `json:"changes"`
}

// change is one command of Up and the command that undoes it.
type change struct {
	// What describes the change for logs and `tetherd down`.
	What string  `json:"what"`
	Do   command `json:"do"`
	// Undo is nil when nothing needs undoing (an address of the utun or
	// the utun's MTU: they go with the interface).
	Undo *command `json:"undo,omitempty"`
	// OnTUN says that the change lives on the utun: it is undone only
	// while that utun exists, and otherwise it is gone already.
	OnTUN bool `json:"on_tun,omitempty"`
	// ExistsOK says that a route add finding the route already there
	// (e.g. the prefix route the kernel adds with an IPv6 address) is
	// not an error.
	ExistsOK bool `json:"exists_ok,omitempty"`
	// Exclude is set on the route of an Exclude prefix through the
	// default gateway, which Refresh moves when the gateway changes.
	Exclude netip.Prefix `json:"exclude,omitzero"`
	// PFEnable marks `pfctl -E`: its Undo, `pfctl -X TOKEN`, is known
	// only from what it printed, and is journaled once it ran.
	PFEnable bool `json:"pf_enable,omitempty"`
}

// command is a command line; Stdin is fed to it (scutil scripts).
type command struct {
	Name  string   `json:"name"`
	Args  []string `json:"args"`
	Stdin string   `json:"stdin,omitempty"`
}

func (c command) String() string { return commandLine(c.Name, c.Args) }

// allowedCommands are the only commands a journal may name: the journal is data, not
// a script.
var allowedCommands = []string{routeCmd, ifconfigCmd, scutilCmd, pfctlCmd}

// check refuses a journal that Up cannot have written. Down runs the journal's undo
// commands as root, so a damaged one must not make it remove what is not tetherd's:
// each undo must have the shape of one that Up writes (checkUndo), and the utun must
// be one.
func (j *journal) check() error {
	if j.TUN == "utun" || !utunName.MatchString(j.TUN) {
		return fmt.Errorf("journal names the interface %q, not a utun", j.TUN)
	}
	for _, c := range j.Changes {
		for _, cmd := range []*command{&c.Do, c.Undo} {
			if cmd != nil && !slices.Contains(allowedCommands, cmd.Name) {
				return fmt.Errorf("journal names the command %q; only %v are allowed", cmd.Name, allowedCommands)
			}
		}
		if c.Undo != nil {
			if err := j.checkUndo(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkUndo accepts the undo commands of Up's changes (plan, excludeChange,
// pfChanges) and nothing else:
//
//	ifconfig UTUN inet|inet6 ADDRESS -alias                    (an address of the utun)
//	route -n delete -inet|-inet6 PREFIX -interface UTUN        (a route into the tunnel)
//	route -n delete -inet|-inet6 PREFIX GATEWAY|-interface IF  (an Exclude route, PREFIX = Exclude)
//	scutil < the script that removes tetherd's DNS key
//	pfctl  as checkPFCommand allows
func (j *journal) checkUndo(c change) error {
	u, a := *c.Undo, c.Undo.Args
	ok := false
	switch u.Name {
	case pfctlCmd:
		return checkPFCommand(u)
	case scutilCmd:
		ok = len(a) == 0 && u.Stdin == removeDNSScript()
	case ifconfigCmd:
		ok = c.OnTUN && len(a) == 4 && a[0] == j.TUN && a[3] == "-alias" && u.Stdin == "" &&
			isAddrOf(a[2], a[1] == "inet6") && (a[1] == "inet" || a[1] == "inet6")
	case routeCmd:
		if len(a) < 5 || a[0] != "-n" || a[1] != "delete" || (a[2] != "-inet" && a[2] != "-inet6") || u.Stdin != "" {
			break
		}
		v6 := a[2] == "-inet6"
		p, err := netip.ParsePrefix(a[3])
		if err != nil || p.Bits() == 0 || p.Addr().Is6() != v6 || p.Addr().Zone() != "" {
			break
		}
		via := a[4:]
		switch {
		case c.OnTUN:
			ok = slices.Equal(via, []string{"-interface", j.TUN})
		case c.Exclude == p:
			ok = len(via) == 2 && via[0] == "-interface" && ifName.MatchString(via[1]) ||
				len(via) == 1 && isAddrOf(via[0], v6)
		}
	}
	if !ok {
		return fmt.Errorf("journal names %s for %q, which is not an undo tetherd writes", u, c.What)
	}
	return nil
}

// isAddrOf reports whether s is an IP address of the family v6 says, as route and
// ifconfig print it (an IPv6 link-local gateway has a zone: fe80::1%en0).
func isAddrOf(s string, v6 bool) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is6() == v6 && !a.Is4In6() && (a.Zone() == "" || v6 && ifName.MatchString(a.Zone()))
}

// journalStore is the journal directory, locked while a process owns it.
// The lock is an flock on the directory itself, so the kernel releases it
// when the owning process dies, however it dies: a journal found by a
// process that holds the lock is stale.
type journalStore struct {
	dir  string
	lock *os.File
}

// openJournalStore creates dir (0700) if needed and takes its lock. It
// fails if another live process holds it.
func openJournalStore(dir string) (*journalStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create journal directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("journal directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("journal directory %s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("journal directory: %w", err)
		}
	}
	f, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	return &journalStore{dir: dir, lock: f}, nil
}

// release drops the lock. The store must not be used afterwards.
func (s *journalStore) release() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the last descriptor releases the flock
	s.lock = nil
	return err
}

func (s *journalStore) path() string { return filepath.Join(s.dir, journalName) }

// read returns the journal, or nil if there is none.
func (s *journalStore) read() (*journal, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parse journal %s: %w (remove it by hand once the system is clean)", s.path(), err)
	}
	if j.Version != journalVersion || j.OS != "darwin" {
		return nil, fmt.Errorf("journal %s has version %d for %q, this tetherd understands version %d for darwin", s.path(), j.Version, j.OS, journalVersion)
	}
	if err := j.check(); err != nil {
		return nil, fmt.Errorf("journal %s: %w", s.path(), err)
	}
	return &j, nil
}

// write stores j atomically: temporary file (0600), fsync, rename, fsync of
// the directory.
func (s *journalStore) write(j *journal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("encode journal: %w", err)
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(s.dir, ".journal-*.tmp") // created 0600
	if err != nil {
		return fmt.Errorf("write journal: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path())
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write journal: %w", err)
	}
	if err := s.lock.Sync(); err != nil { // fsync the directory: the rename is durable
		return fmt.Errorf("sync journal directory: %w", err)
	}
	return nil
}

// remove deletes the journal; a missing journal is not an error.
func (s *journalStore) remove() error {
	if err := os.Remove(s.path()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove journal: %w", err)
	}
	return nil
}
