package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/pkmanager/pkmanager/internal/client"
)

// defaultTokenFile is where the example manifests project the pod's
// ServiceAccount token with audience pkmanager.
const defaultTokenFile = "/var/run/secrets/pkmanager/token"

// clientSecurity are the TLS and token flags of the client commands.
type clientSecurity struct {
	tokenFile  string
	caFile     string
	serverName string
}

func (s *clientSecurity) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&s.tokenFile, "token-file", defaultTokenFile, "bearer token sent with every call: the pod's projected ServiceAccount token (audience pkmanager), or an admin's token; the default is used only when it exists, \"\" sends none")
	fl.StringVar(&s.caFile, "ca-file", "", "PEM CA certificate of the server's TLS certificate: connect with TLS (default plaintext)")
	fl.StringVar(&s.serverName, "tls-server-name", "", "name to check in the server's certificate (default the host of --server)")
}

// resolve checks the files: an explicit --token-file must exist; the default
// one is used only where it exists (outside a pod it does not).
func (s *clientSecurity) resolve(cmd *cobra.Command) (client.Security, error) {
	sec := client.Security{TokenFile: s.tokenFile, CAFile: s.caFile, ServerName: s.serverName}
	if sec.TokenFile != "" {
		if _, err := os.Stat(sec.TokenFile); err != nil {
			if !cmd.Flags().Changed("token-file") && errors.Is(err, fs.ErrNotExist) {
				sec.TokenFile = ""
			} else {
				return sec, fmt.Errorf("--token-file: %w", err)
			}
		}
	}
	if sec.ServerName != "" && sec.CAFile == "" {
		return sec, errors.New("--tls-server-name needs --ca-file (TLS)")
	}
	return sec, nil
}
