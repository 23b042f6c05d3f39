package server

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// TLSOptions configure TLS for both listeners. Empty means plaintext.
type TLSOptions struct {
	CertFile string // PEM certificate chain
	KeyFile  string // PEM private key
}

// tlsFiles serves a certificate that is read again when its files change
// (cert-manager and Kubernetes Secret volumes replace them in place).
type tlsFiles struct {
	certFile, keyFile string

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   string
	checked time.Time
}

func newTLSFiles(o TLSOptions) (*tlsFiles, error) {
	if o.CertFile == "" && o.KeyFile == "" {
		return nil, nil
	}
	if o.CertFile == "" || o.KeyFile == "" {
		return nil, errors.New("TLS needs both --tls-cert and --tls-key")
	}
	t := &tlsFiles{certFile: o.CertFile, keyFile: o.KeyFile}
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

func (t *tlsFiles) fileStamp() string {
	var s string
	for _, f := range []string{t.certFile, t.keyFile} {
		if fi, err := os.Stat(f); err == nil {
			s += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
		}
	}
	return s
}

func (t *tlsFiles) load() error {
	stamp := t.fileStamp()
	c, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return fmt.Errorf("TLS certificate %s / key %s: %w", t.certFile, t.keyFile, err)
	}
	t.cert, t.stamp, t.checked = &c, stamp, time.Now()
	return nil
}

func (t *tlsFiles) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if time.Since(t.checked) > 10*time.Second {
		t.checked = time.Now()
		if t.fileStamp() != t.stamp {
			// On a failed reload (e.g. half-written files) keep serving the old one.
			_ = t.load()
		}
	}
	return t.cert, nil
}

func (t *tlsFiles) config(protos ...string) *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: t.getCertificate, NextProtos: protos}
}

func (t *tlsFiles) grpcCreds() credentials.TransportCredentials {
	return credentials.NewTLS(t.config("h2"))
}

func (t *tlsFiles) listener(l net.Listener) net.Listener {
	return tls.NewListener(l, t.config("h2", "http/1.1"))
}
