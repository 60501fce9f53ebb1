package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCertKeyPair covers what LoadOrCreateCertificate makes of the state directory's
// key.pem and cert.pem (reading the files, their mode and size are
// TestLoadOrCreateCertificate*'s): whatever they hold, it never panics; what loads is
// a certificate whose public key is the key's, with Leaf set; the parser of a key
// without its certificate (certParseKeyPEM) accepts that key too, with the same public
// key, so deleting cert.pem keeps the pin; and an error never quotes the key file.
//
// It calls the loader's parts rather than LoadOrCreateCertificate on files: through
// the files the fuzzer saw coverage change from run to run and spent its time
// minimizing (a handful of inputs in 30 s, against thousands a second here).
func FuzzCertKeyPair(f *testing.F) {
	// Seeds from a state directory made by LoadOrCreateCertificate once, kept in
	// testdata: a key generated here would differ in every fuzz worker.
	keyPEM, err := os.ReadFile(filepath.Join("testdata", "state", certKeyFileName))
	if err != nil {
		f.Fatal(err)
	}
	certPEM, err := os.ReadFile(filepath.Join("testdata", "state", certFileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyPEM, certPEM)
	if key, err := certParseKeyPEM(keyPEM); err == nil {
		der, _ := x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		f.Add(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), certPEM)
	}
	f.Add(certPEM, keyPEM)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), certPEM)
	f.Fuzz(func(t *testing.T, key, cert []byte) {
		c, err := certKeyPair(cert, key, "cert.pem", "key.pem")
		if err != nil {
			for line := range strings.Lines(string(key)) {
				if line = strings.TrimSpace(line); len(line) >= 16 && strings.Contains(err.Error(), line) {
					t.Fatalf("the error quotes the key file: %v", err)
				}
			}
			return
		}
		signer, ok := c.PrivateKey.(crypto.Signer)
		if !ok || c.Leaf == nil {
			t.Fatalf("loaded %T, leaf %v", c.PrivateKey, c.Leaf)
		}
		pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(c.Leaf.PublicKey) {
			t.Fatal("the certificate is not the key's")
		}
		alone, err := certParseKeyPEM(key)
		if err != nil {
			t.Fatalf("the key loads with its certificate but not alone: %v", err)
		}
		if !pub.Equal(alone.Public()) {
			t.Fatal("the key alone parses to another key: a new certificate would change the pin")
		}
	})
}
