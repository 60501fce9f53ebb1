package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/tetherd/tetherd/internal/fsutil"
)

// File names of the server identity inside the directory given to
// LoadOrCreateCertificate.
const (
	certFileName    = "cert.pem"
	certKeyFileName = "key.pem"
)

// certCommonName is the subject common name of generated certificates.
const certCommonName = "tetherd"

// certValidYears is how long a generated certificate is valid.
const certValidYears = 10

// LoadOrCreateCertificate loads dir/cert.pem and dir/key.pem, or creates them
// (ECDSA P-256, self-signed, valid 10 years, CN "tetherd", SANs: the given
// hosts — IPs as IP SANs, names as DNS SANs; "localhost" always included)
// when absent. dir is created 0700, key.pem written 0600 atomically (write
// temp + rename). A key file readable by group/others is refused with an
// error that says the chmod command that fixes it.
//
// When key.pem exists but cert.pem does not (for example after a crash
// between the two writes, or after cert.pem was deleted), a new certificate
// is issued for the existing key, so the SPKI pin does not change. When
// cert.pem exists without key.pem, an error is returned rather than a new
// identity silently created.
//
// hosts are only used when a certificate is created; they must be IP
// addresses (IPv6 optionally in brackets) or DNS names. The Leaf field of the
// returned certificate is set.
func LoadOrCreateCertificate(dir string, hosts []string) (tls.Certificate, error) {
	if dir == "" {
		return tls.Certificate{}, errors.New("transport: certificate directory is empty")
	}
	ips, names, err := certSANs(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: create certificate directory: %w", err)
	}
	certPath := filepath.Join(dir, certFileName)
	keyPath := filepath.Join(dir, certKeyFileName)

	keyPEM, err := certReadKeyFile(keyPath)
	switch {
	case err == nil:
		certPEM, err := os.ReadFile(certPath)
		if err == nil {
			return certKeyPair(certPEM, keyPEM, certPath, keyPath)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return tls.Certificate{}, fmt.Errorf("transport: read certificate: %w", err)
		}
		// Key without certificate: issue a new certificate for the same key,
		// keeping the pin.
		key, err := certParseKeyPEM(keyPEM)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: %s: %w", keyPath, err)
		}
		certPEM, err = certSelfSignedPEM(key, ips, names, time.Now())
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := fsutil.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: write certificate: %w", err)
		}
		return certKeyPair(certPEM, keyPEM, certPath, keyPath)

	case errors.Is(err, fs.ErrNotExist):
		if _, serr := os.Stat(certPath); serr == nil {
			return tls.Certificate{}, fmt.Errorf("transport: %s exists but %s does not; restore the key, or remove %s to create a new identity (clients will then need the new pin)", certPath, keyPath, certPath)
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: generate key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: encode key: %w", err)
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		certPEM, err := certSelfSignedPEM(key, ips, names, time.Now())
		if err != nil {
			return tls.Certificate{}, err
		}
		// Key first: a crash before the certificate is written is repaired
		// by the key-without-certificate case above.
		if err := fsutil.WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: write key: %w", err)
		}
		if err := fsutil.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: write certificate: %w", err)
		}
		return certKeyPair(certPEM, keyPEM, certPath, keyPath)

	default:
		return tls.Certificate{}, err
	}
}

// certReadKeyFile reads the key file at path, refusing it when its mode
// lets group or others access it.
func certReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("transport: open key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("transport: stat key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("transport: %s is not a regular file", path)
	}
	// Windows has no group/other permission bits to check.
	if perm := fi.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("transport: private key %s is accessible by group or others (mode %04o); fix it with: chmod 600 %s", path, perm, certShellQuote(path))
	}
	const maxKeySize = 1 << 20
	b, err := io.ReadAll(io.LimitReader(f, maxKeySize+1))
	if err != nil {
		return nil, fmt.Errorf("transport: read key: %w", err)
	}
	if len(b) > maxKeySize {
		return nil, fmt.Errorf("transport: %s is too large to be a private key", path)
	}
	return b, nil
}

// certKeyPair builds the tls.Certificate from PEM data and makes sure its
// Leaf is set.
func certKeyPair(certPEM, keyPEM []byte, certPath, keyPath string) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("transport: load %s and %s: %w", certPath, keyPath, err)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("transport: parse %s: %w", certPath, err)
		}
		cert.Leaf = leaf
	}
	return cert, nil
}

// certSANs sorts hosts into IP and DNS subject alternative names, adding
// "localhost" and dropping duplicates and empty entries.
func certSANs(hosts []string) ([]net.IP, []string, error) {
	var ips []net.IP
	names := []string{"localhost"}
	seenIP := map[netip.Addr]bool{}
	seenName := map[string]bool{"localhost": true}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		bare := h
		if strings.HasPrefix(bare, "[") && strings.HasSuffix(bare, "]") {
			bare = bare[1 : len(bare)-1]
		}
		if addr, err := netip.ParseAddr(bare); err == nil {
			addr = addr.WithZone("").Unmap()
			if !seenIP[addr] {
				seenIP[addr] = true
				ips = append(ips, net.IP(addr.AsSlice()))
			}
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(h, "."))
		if !fsutil.ValidDNSName(name) {
			return nil, nil, fmt.Errorf("transport: certificate host %q is neither an IP address nor a DNS name", h)
		}
		if !seenName[name] {
			seenName[name] = true
			names = append(names, name)
		}
	}
	return ips, names, nil
}

// certSelfSignedPEM issues the self-signed server certificate for key.
func certSelfSignedPEM(key crypto.Signer, ips []net.IP, names []string, now time.Time) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("transport: generate serial number: %w", err)
	}
	notBefore := now.Add(-time.Hour) // tolerate clients whose clocks run slow
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: certCommonName},
		NotBefore:             notBefore,
		NotAfter:              notBefore.AddDate(certValidYears, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("transport: create certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// certParseKeyPEM decodes the first PEM private key block in data the way
// tls.X509KeyPair does — any "PRIVATE KEY" or "... PRIVATE KEY" block, PKCS #1,
// PKCS #8 or SEC 1 whatever its label says — so that a key that loads with its
// certificate also loads without it (and a new certificate keeps the pin).
func certParseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key found")
		}
		if block.Type != "PRIVATE KEY" && !strings.HasSuffix(block.Type, " PRIVATE KEY") {
			continue
		}
		if key, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return key, nil
		}
		if key, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			// RSA, ECDSA and Ed25519 keys sign, as tls wants; an ECDH key does not.
			if signer, ok := key.(crypto.Signer); ok {
				return signer, nil
			}
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		if key, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
			return key, nil
		}
		return nil, fmt.Errorf("the %s block is not a PKCS #1, PKCS #8 or SEC 1 private key", block.Type)
	}
}

// certShellQuote quotes path for a POSIX shell when it needs quoting.
func certShellQuote(path string) string {
	safe := true
	for i := 0; i < len(path); i++ {
		c := path[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("/._-+,:@%", c) >= 0) {
			safe = false
			break
		}
	}
	if safe && path != "" {
		return path
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'"
}

// SPKIPin returns "sha256:" + base64.RawURLEncoding(sha256(cert.RawSubjectPublicKeyInfo)).
// It returns "" for a nil certificate.
func SPKIPin(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return spkiPinPrefix + base64.RawURLEncoding.EncodeToString(sum[:])
}

// PinMismatchError is the error with which a connection made with a
// PinnedTLSConfig fails when the server's certificate does not match the
// pin. The TLS handshake returns it unwrapped; callers further up may wrap
// it, so test for it with errors.As.
type PinMismatchError struct {
	Expected string // the pin the client was given
	Got      string // the pin of the certificate the server presented
}

// Error implements error.
func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("transport: server certificate does not match the pin: expected %s, got %s", e.Expected, e.Got)
}

// PinnedTLSConfig returns a client tls.Config (MinVersion TLS 1.3,
// NextProtos {"http/1.1"}) that accepts exactly the server whose leaf
// certificate's SPKI matches pin, ignoring CA chains and host names
// (VerifyPeerCertificate / VerifyConnection with InsecureSkipVerify), and
// fails with an error that shows expected and got pins when it does not.
// base may be nil; it is cloned, never mutated.
//
// The check runs in VerifyConnection, which crypto/tls also calls for
// resumed sessions. A VerifyConnection set in base still runs, after the pin
// check; a VerifyPeerCertificate set in base also still runs (with no
// verified chains). A mismatch is reported as a *PinMismatchError.
func PinnedTLSConfig(base *tls.Config, pin string) (*tls.Config, error) {
	want, err := decodeSPKIPin(pin)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	cfg := base.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	// The pin replaces chain and host name verification, which cannot
	// succeed for a self-signed certificate; VerifyConnection below does
	// the actual check.
	cfg.InsecureSkipVerify = true
	if cfg.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if cfg.MaxVersion != 0 && cfg.MaxVersion < tls.VersionTLS13 {
		cfg.MaxVersion = 0
	}
	cfg.NextProtos = []string{"http/1.1"}
	next := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return &PinMismatchError{Expected: pin, Got: "(no certificate)"}
		}
		leaf := cs.PeerCertificates[0]
		got := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
		if subtle.ConstantTimeCompare(got[:], want) != 1 {
			return &PinMismatchError{Expected: pin, Got: SPKIPin(leaf)}
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return cfg, nil
}
