//go:build linux

package linux

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// journalName is the journal's file name inside Config.JournalDir.
const journalName = "journal.json"

// journalVersion is the format version of journal.json.
const journalVersion = 1

// journal describes everything Up is about to change, written before the
// first change so that Down can undo it after the process died. It lists
// only what Up adds: pre-existing addresses and the like are not in it.
type journal struct {
	Version int       `json:"version"`
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`
	// TUN and TUNIndex identify the link: a link with the same name but
	// another index is a new TUN of a later process and is not touched.
	TUN      string `json:"tun"`
	TUNIndex int    `json:"tun_index"`
	// MTU is set when Up changes the MTU.
	MTU *mtuChange `json:"mtu,omitempty"`
	// SetUp is true when Up brings the link up (it was down).
	SetUp bool `json:"set_up,omitempty"`
	// Addrs are the addresses Up adds to the TUN.
	Addrs []netip.Prefix `json:"addrs,omitempty"`
	// Table is the private table; it was empty before Up and Down flushes
	// it.
	Table int `json:"table"`
	// Routes are the destinations routed into the TUN in Table.
	Routes []netip.Prefix `json:"routes"`
	// Rules are the policy rules Up adds, in the order added.
	Rules []ruleSpec `json:"rules"`
	// DNS is nil when Up leaves DNS alone.
	DNS *dnsJournal `json:"dns,omitempty"`
}

// mtuChange is an MTU change on the TUN.
type mtuChange struct {
	From int `json:"from"`
	To   int `json:"to"`
}

// dnsJournal records a DNS change and what restores it.
type dnsJournal struct {
	Mode string `json:"mode"` // DNSResolvConf or DNSResolved

	// resolv.conf mode.
	Path     string      `json:"path,omitempty"`
	Existed  bool        `json:"existed,omitempty"`
	Original []byte      `json:"original,omitempty"` // the complete original file
	Perm     fs.FileMode `json:"perm,omitempty"`

	// resolved mode: the link configuration set with resolvectl, undone
	// with `resolvectl revert LINK`.
	Link         string       `json:"link,omitempty"`
	Servers      []netip.Addr `json:"servers,omitempty"`
	Domains      []string     `json:"domains,omitempty"`
	DefaultRoute bool         `json:"default_route,omitempty"`
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
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("open journal directory: %w", err)
	}
	if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is locked: another tetherd is running; stop it first", dir)
		}
		return nil, fmt.Errorf("lock journal directory %s: %w", dir, err)
	}
	return &journalStore{dir: dir, lock: f}, nil
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
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
	if j.Version != journalVersion {
		return nil, fmt.Errorf("journal %s has version %d, this tetherd understands %d", s.path(), j.Version, journalVersion)
	}
	if err := j.validate(); err != nil {
		return nil, fmt.Errorf("journal %s is not one tetherd wrote: %w (remove it by hand once the system is clean)", s.path(), err)
	}
	return &j, nil
}

// validate checks that j only names what Up can have changed, before restore acts
// on it: a damaged journal must not make Down delete what is not tetherd's. Table 0
// would make the route flush match every table, priority 0 is the local rule,
// 32766 and 32767 the main and default rules.
func (j *journal) validate() error {
	if err := validIfName(j.TUN); err != nil {
		return fmt.Errorf("TUN: %w", err)
	}
	if j.TUNIndex <= 0 {
		return fmt.Errorf("TUN index %d", j.TUNIndex)
	}
	switch {
	case j.Table <= 0 || uint64(j.Table) > math.MaxUint32:
		return fmt.Errorf("table %d", j.Table)
	case j.Table == unix.RT_TABLE_DEFAULT || j.Table == unix.RT_TABLE_MAIN || j.Table == unix.RT_TABLE_LOCAL:
		return fmt.Errorf("table %d is reserved (default, main, local)", j.Table)
	}
	if j.MTU != nil && (j.MTU.From < 68 || j.MTU.From > 65535 || j.MTU.To < 68 || j.MTU.To > 65535) {
		return fmt.Errorf("MTU change %d -> %d", j.MTU.From, j.MTU.To)
	}
	for _, p := range append(slices.Clone(j.Addrs), j.Routes...) {
		if !p.IsValid() {
			return errors.New("an invalid prefix")
		}
	}
	for _, r := range j.Rules {
		switch {
		case r.Family != 4 && r.Family != 6:
			return fmt.Errorf("rule %v: family %d", r, r.Family)
		case r.Priority < 1 || r.Priority > 32765:
			return fmt.Errorf("rule %v: priority %d outside 1..32765", r, r.Priority)
		case r.Table != j.Table && r.Table != unix.RT_TABLE_MAIN:
			return fmt.Errorf("rule %v: table %d is neither the journal's (%d) nor main", r, r.Table, j.Table)
		}
	}
	if d := j.DNS; d != nil {
		switch d.Mode {
		case DNSResolvConf:
			if !filepath.IsAbs(d.Path) || filepath.Clean(d.Path) != d.Path {
				return fmt.Errorf("DNS: resolv.conf path %q", d.Path)
			}
		case DNSResolved:
			if err := validIfName(d.Link); err != nil {
				return fmt.Errorf("DNS link: %w", err)
			}
		default:
			return fmt.Errorf("DNS mode %q", d.Mode)
		}
	}
	return nil
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
