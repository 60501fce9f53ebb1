package transport

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// certTestLoad calls LoadOrCreateCertificate and fails the test on error.
func certTestLoad(t *testing.T, dir string, hosts []string) tls.Certificate {
	t.Helper()
	cert, err := LoadOrCreateCertificate(dir, hosts)
	if err != nil {
		t.Fatalf("LoadOrCreateCertificate(%q, %q): %v", dir, hosts, err)
	}
	if cert.Leaf == nil {
		t.Fatal("LoadOrCreateCertificate: Leaf not set")
	}
	return cert
}

func TestLoadOrCreateCertificateCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity", "tls")
	cert := certTestLoad(t, dir, []string{"10.0.0.1", "fd00::1", "[fd00::2]", "Example.COM", "example.com.", " ", "localhost", "10.0.0.1"})
	leaf := cert.Leaf

	if leaf.Subject.CommonName != "tetherd" {
		t.Errorf("CN = %q, want tetherd", leaf.Subject.CommonName)
	}
	if want := []string{"localhost", "example.com"}; !slices.Equal(leaf.DNSNames, want) {
		t.Errorf("DNS SANs = %q, want %q", leaf.DNSNames, want)
	}
	var ips []string
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.1", "fd00::1", "fd00::2"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs = %q, want %q", ips, want)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("public key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.IsCA {
		t.Error("certificate is a CA")
	}
	if err := leaf.CheckSignature(leaf.SignatureAlgorithm, leaf.RawTBSCertificate, leaf.Signature); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	now := time.Now()
	if leaf.NotBefore.After(now) {
		t.Errorf("NotBefore %v is in the future", leaf.NotBefore)
	}
	if years := leaf.NotAfter.Sub(now).Hours() / 24 / 365; years < 9.9 || years > 10.1 {
		t.Errorf("valid for %.2f more years, want 10", years)
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		t.Error("no server auth extended key usage")
	}

	if runtime.GOOS != "windows" {
		for path, want := range map[string]os.FileMode{
			dir:                           0o700,
			filepath.Join(dir, "key.pem"): 0o600,
		} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: mode %04o, want %04o", path, got, want)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"cert.pem", "key.pem"}; !slices.Equal(names, want) {
		t.Errorf("directory holds %q, want %q (no temporary files left)", names, want)
	}
}

func TestLoadOrCreateCertificateReloads(t *testing.T) {
	dir := t.TempDir()
	first := certTestLoad(t, dir, []string{"10.0.0.1"})
	// Different hosts do not matter once the identity exists.
	second := certTestLoad(t, dir, []string{"192.0.2.7", "other.example"})
	if p1, p2 := SPKIPin(first.Leaf), SPKIPin(second.Leaf); p1 != p2 {
		t.Errorf("pin changed on reload: %s, then %s", p1, p2)
	}
	if !bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Error("certificate changed on reload")
	}
}

func TestLoadOrCreateCertificateKeyWithoutCert(t *testing.T) {
	dir := t.TempDir()
	first := certTestLoad(t, dir, nil)
	if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
		t.Fatal(err)
	}
	second := certTestLoad(t, dir, nil)
	if bytes.Equal(first.Certificate[0], second.Certificate[0]) {
		t.Error("certificate not reissued")
	}
	if p1, p2 := SPKIPin(first.Leaf), SPKIPin(second.Leaf); p1 != p2 {
		t.Errorf("pin changed when the certificate was reissued: %s, then %s", p1, p2)
	}
	third := certTestLoad(t, dir, nil)
	if !bytes.Equal(second.Certificate[0], third.Certificate[0]) {
		t.Error("reissued certificate not saved")
	}
}

// A key that tls accepts with its certificate is reissued one without it, whatever
// its PEM label says: the property FuzzCertKeyPair checks. The first and the last
// label were refused before.
func TestLoadOrCreateCertificateKeyLabels(t *testing.T) {
	src := t.TempDir()
	first := certTestLoad(t, src, nil)
	sec1, err := x509.MarshalECPrivateKey(first.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{"PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH-ISH PRIVATE KEY"} {
		dir := t.TempDir()
		keyPEM := pem.EncodeToMemory(&pem.Block{Type: label, Bytes: sec1})
		if err := os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		c := certTestLoad(t, dir, nil)
		if SPKIPin(c.Leaf) != SPKIPin(first.Leaf) {
			t.Errorf("%s: a certificate for another key", label)
		}
	}
}

func TestLoadOrCreateCertificateCertWithoutKey(t *testing.T) {
	dir := t.TempDir()
	certTestLoad(t, dir, nil)
	keyPath := filepath.Join(dir, "key.pem")
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	_, err := LoadOrCreateCertificate(dir, nil)
	if err == nil || !strings.Contains(err.Error(), keyPath) || !strings.Contains(err.Error(), "remove") {
		t.Fatalf("got error %v, want one naming %s and saying what to remove", err, keyPath)
	}
	if _, serr := os.Stat(keyPath); !errors.Is(serr, os.ErrNotExist) {
		t.Error("a new key was created although a certificate exists")
	}
}

func TestLoadOrCreateCertificateRefusesOpenKey(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits on Windows")
	}
	dir := t.TempDir()
	certTestLoad(t, dir, nil)
	keyPath := filepath.Join(dir, "key.pem")
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(keyPath, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateCertificate(dir, nil)
		if err == nil {
			t.Fatalf("mode %04o: key accepted", mode)
		}
		if hint := "chmod 600 " + keyPath; !strings.Contains(err.Error(), hint) {
			t.Errorf("mode %04o: error %q lacks the hint %q", mode, err, hint)
		}
	}
	// The fix the error suggests works.
	if err := os.Chmod(keyPath, 0o600); err != nil {
		t.Fatal(err)
	}
	certTestLoad(t, dir, nil)
	if err := os.Chmod(keyPath, 0o400); err != nil {
		t.Fatal(err)
	}
	certTestLoad(t, dir, nil)
}

func TestLoadOrCreateCertificateBadInput(t *testing.T) {
	t.Run("empty dir", func(t *testing.T) {
		if _, err := LoadOrCreateCertificate("", nil); err == nil {
			t.Error("no error")
		}
	})
	t.Run("bad host", func(t *testing.T) {
		for _, h := range []string{"exa mple.com", "a/b", "10.0.0.1:8443", "-", "a..b", strings.Repeat("a", 64) + ".com"} {
			_, err := LoadOrCreateCertificate(t.TempDir(), []string{h})
			if err == nil || !strings.Contains(err.Error(), h) {
				t.Errorf("host %q: got error %v, want one naming it", h, err)
			}
		}
	})
	t.Run("dir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateCertificate(f, nil); err == nil {
			t.Error("no error")
		}
	})
	for name, corrupt := range map[string]func(t *testing.T, dir string){
		"garbage key": func(t *testing.T, dir string) {
			certTestWrite(t, filepath.Join(dir, "key.pem"), "not a key", 0o600)
		},
		"garbage cert": func(t *testing.T, dir string) {
			certTestWrite(t, filepath.Join(dir, "cert.pem"), "not a cert", 0o644)
		},
		"garbage key without cert": func(t *testing.T, dir string) {
			certTestWrite(t, filepath.Join(dir, "key.pem"), "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 0o600)
			if err := os.Remove(filepath.Join(dir, "cert.pem")); err != nil {
				t.Fatal(err)
			}
		},
		"key of another certificate": func(t *testing.T, dir string) {
			other := t.TempDir()
			certTestLoad(t, other, nil)
			b, err := os.ReadFile(filepath.Join(other, "key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			certTestWrite(t, filepath.Join(dir, "key.pem"), string(b), 0o600)
		},
		"key is a directory": func(t *testing.T, dir string) {
			keyPath := filepath.Join(dir, "key.pem")
			if err := os.Remove(keyPath); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(keyPath, 0o700); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			certTestLoad(t, dir, nil)
			corrupt(t, dir)
			if _, err := LoadOrCreateCertificate(dir, nil); err == nil {
				t.Error("no error")
			}
		})
	}
}

// certTestWrite writes a file or fails the test.
func certTestWrite(t *testing.T, path, data string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestSPKIPin(t *testing.T) {
	cert := certTestLoad(t, t.TempDir(), nil)
	pin := SPKIPin(cert.Leaf)
	if _, err := decodeSPKIPin(pin); err != nil {
		t.Fatalf("SPKIPin = %q: %v", pin, err)
	}
	// The pin is a valid pin in a peer URI.
	u, err := ParsePeerURI(FormatPeerURI("h:1", "", "t", pin))
	if err != nil || u.Pin != pin {
		t.Fatalf("pin %q does not survive a peer URI: %v", pin, err)
	}
	if got := SPKIPin(nil); got != "" {
		t.Errorf("SPKIPin(nil) = %q, want \"\"", got)
	}
}

func TestPinnedTLSConfigBadPin(t *testing.T) {
	for _, pin := range []string{"", "sha256:", "sha256:abc", peerURITestPin + "=", strings.TrimPrefix(peerURITestPin, "sha256:")} {
		if cfg, err := PinnedTLSConfig(nil, pin); err == nil || cfg != nil {
			t.Errorf("PinnedTLSConfig(nil, %q) = %v, %v; want an error", pin, cfg, err)
		}
	}
}

func TestPinnedTLSConfigDoesNotMutateBase(t *testing.T) {
	var called bool
	base := &tls.Config{
		ServerName:       "example.com",
		NextProtos:       []string{"h2", "http/1.1"},
		MinVersion:       tls.VersionTLS12,
		MaxVersion:       tls.VersionTLS12,
		VerifyConnection: func(tls.ConnectionState) error { called = true; return nil },
	}
	cfg, err := PinnedTLSConfig(base, peerURITestPin)
	if err != nil {
		t.Fatal(err)
	}
	if base.InsecureSkipVerify || base.MinVersion != tls.VersionTLS12 || base.MaxVersion != tls.VersionTLS12 ||
		!slices.Equal(base.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("base mutated: %+v", base)
	}
	if !cfg.InsecureSkipVerify || cfg.MinVersion != tls.VersionTLS13 || cfg.MaxVersion != 0 ||
		!slices.Equal(cfg.NextProtos, []string{"http/1.1"}) || cfg.ServerName != "example.com" {
		t.Errorf("unexpected config: InsecureSkipVerify=%v MinVersion=%#x MaxVersion=%#x NextProtos=%q ServerName=%q",
			cfg.InsecureSkipVerify, cfg.MinVersion, cfg.MaxVersion, cfg.NextProtos, cfg.ServerName)
	}
	// With no certificate at all the check fails before base's callback.
	if err := cfg.VerifyConnection(tls.ConnectionState{}); err == nil {
		t.Error("VerifyConnection accepted a connection without certificates")
	}
	if called {
		t.Error("base VerifyConnection called although the pin check failed")
	}
}

// certTestServer starts an HTTPS test server presenting cert.
func certTestServer(t *testing.T, cert tls.Certificate, maxVersion uint16) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: maxVersion}
	// Failed handshakes are expected; keep them out of the test output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// certTestGet makes one GET request to srv with the client TLS config cfg.
func certTestGet(srv *httptest.Server, cfg *tls.Config) (string, error) {
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get(srv.URL)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestPinnedTLSConfigHandshake(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	// The certificate names only localhost, and the client dials
	// 127.0.0.1 with yet another ServerName: host names are not checked.
	cert := certTestLoad(t, t.TempDir(), nil)
	pin := SPKIPin(cert.Leaf)
	otherPin := SPKIPin(certTestLoad(t, t.TempDir(), nil).Leaf)
	if pin == otherPin {
		t.Fatal("two identities have the same pin")
	}

	srv := certTestServer(t, cert, 0)
	defer srv.Close()

	t.Run("matching pin", func(t *testing.T) {
		var (
			mu      sync.Mutex
			resumed []bool
		)
		base := &tls.Config{
			ServerName:         "not-the-server.example",
			ClientSessionCache: tls.NewLRUClientSessionCache(4),
			VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				defer mu.Unlock()
				resumed = append(resumed, cs.DidResume)
				return nil
			},
		}
		cfg, err := PinnedTLSConfig(base, pin)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			body, err := certTestGet(srv, cfg)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			if body != "hello" {
				t.Fatalf("request %d: body %q", i, body)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		// The second connection resumes the first session; the pin check
		// (and base's callback after it) ran for both.
		if !slices.Equal(resumed, []bool{false, true}) {
			t.Errorf("VerifyConnection calls (DidResume) = %v, want [false true]", resumed)
		}
	})

	t.Run("other pin", func(t *testing.T) {
		cfg, err := PinnedTLSConfig(nil, otherPin)
		if err != nil {
			t.Fatal(err)
		}
		_, err = certTestGet(srv, cfg)
		if err == nil {
			t.Fatal("connected to a server with another pin")
		}
		var mismatch *PinMismatchError
		if !errors.As(err, &mismatch) {
			t.Fatalf("error %v (%T) is not a *PinMismatchError", err, err)
		}
		if mismatch.Expected != otherPin || mismatch.Got != pin {
			t.Errorf("mismatch = %+v, want expected %s, got %s", *mismatch, otherPin, pin)
		}
		for _, s := range []string{"expected " + otherPin, "got " + pin} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not contain %q", err, s)
			}
		}
	})

	t.Run("raw TLS", func(t *testing.T) {
		cfg, err := PinnedTLSConfig(nil, pin)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", srv.Listener.Addr().String(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cs := conn.ConnectionState()
		if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != "http/1.1" {
			t.Errorf("version %#x, protocol %q; want TLS 1.3 and http/1.1", cs.Version, cs.NegotiatedProtocol)
		}
	})
}

func TestPinnedTLSConfigRefusesTLS12(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	cert := certTestLoad(t, t.TempDir(), nil)
	srv := certTestServer(t, cert, tls.VersionTLS12)
	defer srv.Close()
	cfg, err := PinnedTLSConfig(nil, SPKIPin(cert.Leaf))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := certTestGet(srv, cfg); err == nil {
		t.Fatal("connected with TLS 1.2")
	}
}
