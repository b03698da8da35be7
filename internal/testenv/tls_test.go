package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// pingTLS connects to the standalone server at rawURL with tlsConf (nil:
// the URL's own, which trusts the system's CAs only) and PINGs it.
func pingTLS(ctx context.Context, rawURL string, tlsConf *tls.Config) error {
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return err
	}
	if tlsConf != nil {
		opt.TLSConfig = tlsConf
	}
	opt.MaxRetries = -1
	c := redis.NewClient(opt)
	defer c.Close()
	return c.Ping(ctx).Err()
}

func TestRedisTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := MustCA(t)
	caOnly := &tls.Config{RootCAs: ca.Pool()}

	r := MustRedis(t, WithTLS(ca, RequireClientCert))
	if !strings.HasPrefix(r.URL, "rediss://127.0.0.1:") {
		t.Fatalf("URL %s", r.URL)
	}
	if _, err := r.Do(ctx, "PING"); err != nil {
		t.Fatalf("the harness itself: %v", err)
	}
	if err := pingTLS(ctx, r.URL, ca.ClientConfig()); err != nil {
		t.Fatalf("with the CA and a client certificate: %v", err)
	}
	if err := pingTLS(ctx, r.URL, caOnly); err == nil {
		t.Fatal("without a client certificate: connected")
	}
	var unknownCA x509.UnknownAuthorityError
	if err := pingTLS(ctx, r.URL, nil); !errors.As(err, &unknownCA) {
		t.Fatalf("without the CA: err = %v, want an unknown authority", err)
	}
	if err := pingTLS(ctx, strings.Replace(r.URL, "rediss:", "redis:", 1), nil); err == nil {
		t.Fatal("in plain text: connected")
	}
	if v, err := r.Do(ctx, "CONFIG", "GET", "port"); err != nil || v != "port\n0" {
		t.Fatalf("CONFIG GET port = %q, %v; want no plain-text port", v, err)
	}
	// After a restart too.
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pingTLS(ctx, r.URL, ca.ClientConfig()); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	opt := MustRedis(t, WithTLS(ca, OptionalClientCert))
	if err := pingTLS(ctx, opt.URL, caOnly); err != nil {
		t.Fatalf("tls-auth-clients optional, no client certificate: %v", err)
	}
	if err := pingTLS(ctx, opt.URL, ca.ClientConfig()); err != nil {
		t.Fatalf("tls-auth-clients optional, a client certificate: %v", err)
	}
}

func TestRedisClusterTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := MustCA(t)
	c := MustRedisCluster(t, 3, 1, WithTLS(ca, RequireClientCert))
	if !strings.HasPrefix(c.URL(), "rediss://") {
		t.Fatalf("URL %s", c.URL())
	}
	writeEveryMaster(t, ctx, c, clusterClient(t, c, ca), 30)

	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.TLSConfig.RootCAs = ca.Pool() // and no client certificate
	opt.MaxRedirects = -1
	cc := redis.NewClusterClient(opt)
	defer cc.Close()
	if err := cc.Ping(ctx).Err(); err == nil {
		t.Fatal("without a client certificate: connected")
	}
}

func TestRedisSentinelTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ca := MustCA(t)
	s := MustRedisSentinel(t, 1, WithTLS(ca, RequireClientCert))
	if !strings.HasPrefix(s.URL(), "rediss://") {
		t.Fatalf("URL %s", s.URL())
	}
	c := failoverClient(t, s, ca)
	setAndWait(t, ctx, c, 1, 1, "k")
	if v, err := s.Nodes[1].Do(ctx, "GET", "k"); err != nil || v != "v" {
		t.Fatalf("replica: GET k = %q, %v", v, err)
	}
}

func TestPostgresTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ca := MustCA(t)
	p := MustPostgresTLS(t, ca, true)

	const sslInUse = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
	if got := queryString(t, ctx, p.URL, sslInUse); got != "true" {
		t.Fatalf("ssl = %s", got)
	}
	if !strings.Contains(p.DatabaseURL("app"), "sslmode=verify-full") {
		t.Fatalf("DatabaseURL %s", p.DatabaseURL("app"))
	}
	refused := func(what, rawURL string) {
		t.Helper()
		conn, err := pgx.Connect(ctx, rawURL)
		if err == nil {
			conn.Close(ctx)
			t.Fatalf("%s: connected", what)
		}
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		t.Fatal(err)
	}
	without := func(u url.URL, keys ...string) string {
		q := u.Query()
		for _, k := range keys {
			q.Del(k)
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	refused("without a client certificate", without(*u, "sslcert", "sslkey"))
	plain := *u
	plain.RawQuery = "sslmode=disable"
	refused("in plain text", plain.String())

	// Certificate authentication: the common name must be the role.
	if _, err := p.CreateDatabase(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, p.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE ROLE app LOGIN"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	cert, key, err := ca.IssueClient("app")
	if err != nil {
		t.Fatal(err)
	}
	app := *u
	app.User = url.User("app")
	refused("as app with the certificate of postgres", app.String())
	q := app.Query()
	q.Set("sslcert", cert)
	q.Set("sslkey", key)
	app.RawQuery = q.Encode()
	if got := queryString(t, ctx, app.String(), "SELECT current_user::text"); got != "app" {
		t.Fatalf("current_user = %s", got)
	}
}
