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

// allowedCommands are the only commands a journal may make Down run: the
// journal is data, not a script.
var allowedCommands = []string{routeCmd, ifconfigCmd, scutilCmd, pfctlCmd}

func (j *journal) check() error {
	for _, c := range j.Changes {
		for _, cmd := range []*command{&c.Do, c.Undo} {
			if cmd != nil && !slices.Contains(allowedCommands, cmd.Name) {
				return fmt.Errorf("journal names the command %q; only %v are allowed", cmd.Name, allowedCommands)
			}
			if cmd != nil && cmd.Name == pfctlCmd {
				if err := checkPFCommand(*cmd); err != nil {
					return err
				}
			}
		}
	}
	return nil
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
