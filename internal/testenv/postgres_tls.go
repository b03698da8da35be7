package testenv

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// StartPostgresTLS starts a private server as StartPrivatePostgres does
// that takes TCP connections over TLS only: ssl=on with ca's server
// certificate, and pg_hba.conf has hostssl lines and no host lines, so a
// plain-text connection is refused. With clientCert, a connection must also
// present a certificate ca signed whose common name is the user
// (clientcert=verify-full): ca's client certificate is the one of
// "postgres"; CA.IssueClient makes others.
//
// Its URL and DatabaseURL carry sslmode=verify-full and sslrootcert, and
// with clientCert sslcert and sslkey: libpq's parameters, which pgx reads
// too.
func StartPostgresTLS(ctx context.Context, ca *CA, clientCert bool) (*Postgres, error) {
	return startPrivatePostgres(ctx, func(p *Postgres) error { return p.useTLS(ca, clientCert) })
}

// MustPostgresTLS starts a server with StartPostgresTLS or fails t (it
// never skips), and stops the server when t ends.
func MustPostgresTLS(t testing.TB, ca *CA, clientCert bool) *Postgres {
	t.Helper()
	return mustPostgres(t, func(ctx context.Context) (*Postgres, error) {
		return StartPostgresTLS(ctx, ca, clientCert)
	})
}

// useTLS configures the initialised, not yet started server p for TLS.
func (p *Postgres) useTLS(ca *CA, clientCert bool) error {
	// The server reads its files from its data directory, as its own OS
	// user, and refuses a key that others may read.
	for src, dst := range map[string]string{ca.ServerCertFile: "server.crt", ca.ServerKeyFile: "server.key", ca.CertFile: "root.crt"} {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		path := filepath.Join(p.data, dst)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		if err := p.chown(path); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	p.extraArgs = append(p.extraArgs,
		"-c", "ssl=on",
		"-c", "ssl_cert_file=server.crt",
		"-c", "ssl_key_file=server.key",
		"-c", "ssl_ca_file=root.crt",
	)
	auth := "trust"
	if clientCert {
		auth = "trust clientcert=verify-full"
	}
	hba := "" +
		"local   all         all                trust\n" +
		"local   replication all                trust\n" +
		"hostssl all         all  127.0.0.1/32  " + auth + "\n" +
		"hostssl replication all  127.0.0.1/32  " + auth + "\n"
	if err := os.WriteFile(filepath.Join(p.data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := p.chown(filepath.Join(p.data, "pg_hba.conf")); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	p.sslQuery = "sslmode=verify-full&sslrootcert=" + url.QueryEscape(ca.CertFile)
	if clientCert {
		p.sslQuery += "&sslcert=" + url.QueryEscape(ca.ClientCertFile) + "&sslkey=" + url.QueryEscape(ca.ClientKeyFile)
	}
	return nil
}
