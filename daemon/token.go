package daemon

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/tetherd/tetherd/internal/fsutil"
)

// TokenFileName is the name of the generated token's file in the state directory.
const TokenFileName = "token"

// maxTokenFileSize bounds a token file.
const maxTokenFileSize = 4 << 10

// ReadTokenFile reads a bearer token from path. The file must not be accessible by
// group or others; one trailing newline is ignored. Errors never contain the token.
func ReadTokenFile(path string) (string, error) {
	b, err := readPrivateFile(path, "token file", maxTokenFileSize)
	if err != nil {
		return "", err
	}
	t := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if err := checkToken(t); err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// LoadOrCreateToken returns the token kept in dir/token, creating it (32 random bytes,
// base64url, mode 0600, dir created 0700) when the file does not exist, so that a peer
// keeps the same URI across restarts.
func LoadOrCreateToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenFileName)
	t, err := ReadTokenFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return t, err
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("generate token: %w", err)
	}
	t = base64.RawURLEncoding.EncodeToString(raw[:])
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create state directory: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write token: %w", err)
	}
	return t, nil
}

// readPrivateFile reads the regular file at path, of at most max bytes, refusing it
// when group or others may access it. what names the file in errors ("config file").
// A missing file gives an error that matches fs.ErrNotExist.
func readPrivateFile(path, what string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	// Windows has no group and other permission bits to check.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("%s %s is accessible by group or others (mode %04o); fix it with: chmod 600 %s", what, path, perm, shellQuote(path))
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s %s is larger than %v", what, path, Size(max))
	}
	return b, nil
}

// shellQuote quotes path for a POSIX shell when it needs quoting.
func shellQuote(path string) string {
	safe := path != ""
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+,:@%", c) >= 0) {
			safe = false
			break
		}
	}
	if safe {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}
