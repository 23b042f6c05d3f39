package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Security configures how a client proves itself and checks the server.
type Security struct {
	// CAFile holds the PEM CA certificate(s) of the server's TLS
	// certificate; "" means plaintext.
	CAFile string
	// ServerName overrides the name checked in the server's certificate
	// (default: the host of the address).
	ServerName string
	// TokenFile holds the bearer token sent with every call (a projected
	// ServiceAccount token). It is read again for every call, since the
	// kubelet rotates it. "" sends no token.
	TokenFile string
}

func (s Security) dialOptions() ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if s.CAFile == "" {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	} else {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", s.CAFile)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: pool, ServerName: s.ServerName, MinVersion: tls.VersionTLS12,
		})))
	}
	if s.TokenFile != "" {
		if _, err := readToken(s.TokenFile); err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(tokenFile{path: s.TokenFile}))
	}
	return opts, nil
}

// tokenFile sends "authorization: Bearer <token>" read from a file.
type tokenFile struct{ path string }

func (t tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := readToken(t.path)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity is false: plaintext is allowed for loopback and
// for meshes that encrypt; the token is bound to one pod and one audience.
func (tokenFile) RequireTransportSecurity() bool { return false }

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("token file " + path + " is empty")
	}
	return tok, nil
}
