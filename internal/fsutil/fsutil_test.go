package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAtomic(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, data := range []string{"one", "two"} {
		if err := WriteFileAtomic(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		fi, _ := os.Stat(p)
		if err != nil || string(b) != data || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%q %v %v", b, err, fi.Mode())
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := WriteFileAtomic(filepath.Join(p, "under-a-file"), nil, 0o600); err == nil {
		t.Fatal("write under a regular file succeeded")
	}
}

func TestValidDNSName(t *testing.T) {
	for s, want := range map[string]bool{
		"phone.lan": true, "a_b.example": true, "x": true, "": false, "-a.b": false,
		"a..b": false, "a b": false, string(make([]byte, 254)): false,
	} {
		if ValidDNSName(s) != want {
			t.Errorf("ValidDNSName(%q) != %v", s, want)
		}
	}
}
