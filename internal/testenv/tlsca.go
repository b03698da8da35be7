package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// caClientName is the common name of the client certificate NewCA issues:
// the superuser the harness connects to PostgreSQL as, so that the same
// certificate passes a pg_hba.conf line with clientcert=verify-full (which
// wants the common name to be the user name).
const caClientName = "postgres"

// CA is a certificate authority made at run time for the TLS tests, with
// one server certificate and one client certificate it signed. Every key is
// ECDSA P-256 and every file PEM; the key files are mode 0600, as
// PostgreSQL and libpq demand.
type CA struct {
	Dir string // where the files are

	CertFile string // the CA certificate: what servers and clients trust

	// ServerCertFile and ServerKeyFile are for the servers: valid for
	// 127.0.0.1, ::1 and localhost. The certificate is good for client
	// authentication too, because Redis presents its own certificate when it
	// connects as a client: a replica to its primary, a cluster node to its
	// peers, a sentinel to the servers it watches.
	ServerCertFile, ServerKeyFile string

	// ClientCertFile and ClientKeyFile are a client certificate with common
	// name "postgres".
	ClientCertFile, ClientKeyFile string

	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	pool   *x509.CertPool
	client tls.Certificate
}

// NewCA creates a CA in dir (which must exist) and issues its server and
// client certificates. They are valid from an hour ago, to allow for clock
// skew, for a day.
func NewCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	tmpl := certTemplate("cdcd test CA")
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	ca := &CA{Dir: dir, CertFile: filepath.Join(dir, "ca.crt"), cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	if err := writePEM(ca.CertFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}

	server := certTemplate("localhost")
	server.DNSNames = []string{"localhost"}
	server.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	server.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if ca.ServerCertFile, ca.ServerKeyFile, err = ca.issue("server", server); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	if ca.ClientCertFile, ca.ClientKeyFile, err = ca.IssueClient(caClientName); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	if ca.client, err = tls.LoadX509KeyPair(ca.ClientCertFile, ca.ClientKeyFile); err != nil {
		return nil, fmt.Errorf("new ca: %w", err)
	}
	return ca, nil
}

// MustCA creates a CA in a temporary directory of t with NewCA or fails t.
func MustCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// IssueClient issues a client certificate with common name name (for
// PostgreSQL's certificate authentication, the name of the role) and
// returns its files, NAME.crt and NAME.key in the CA's directory.
func (ca *CA) IssueClient(name string) (certFile, keyFile string, err error) {
	tmpl := certTemplate(name)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	certFile, keyFile, err = ca.issue(name, tmpl)
	if err != nil {
		return "", "", fmt.Errorf("issue client certificate %s: %w", name, err)
	}
	return certFile, keyFile, nil
}

// Pool returns a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// ClientConfig returns a TLS configuration that trusts only the CA and
// presents the client certificate: what a client of a server that demands
// client certificates needs.
func (ca *CA) ClientConfig() *tls.Config {
	return &tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.client}, MinVersion: tls.VersionTLS12}
}

// issue signs tmpl with a new key and writes NAME.crt and NAME.key.
func (ca *CA) issue(name string, tmpl *x509.Certificate) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(ca.Dir, name+".crt"), filepath.Join(ca.Dir, name+".key")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// certTemplate returns a certificate template with a random serial number,
// valid from an hour ago for a day.
func certTemplate(commonName string) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"cdcd tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
}

func writePEM(path, kind string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), mode)
}
