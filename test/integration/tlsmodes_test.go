package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// tlsRedisVars are cdcd's variables for a TLS-only Redis at url in mode,
// with the client certificate unless withCert is false.
func tlsRedisVars(mode, url string, ca *testenv.CA, withCert bool) []string {
	vars := []string{
		"CDCD_REDIS_MODE=" + mode,
		"CDCD_REDIS_URL=" + url,
		"CDCD_REDIS_TLS_CA_FILE=" + ca.CertFile,
	}
	if withCert {
		vars = append(vars, "CDCD_REDIS_TLS_CERT_FILE="+ca.ClientCertFile, "CDCD_REDIS_TLS_KEY_FILE="+ca.ClientKeyFile)
	}
	return vars
}

// assertTLSOnly checks that every data server serves TLS only, demands a
// client certificate and speaks TLS to its peers (replication, and the
// cluster bus when cluster is set). Do itself reaches them over TLS only.
func assertTLSOnly(t *testing.T, servers []*testenv.Redis, cluster bool) {
	t.Helper()
	ctx := context.Background()
	want := map[string]string{"port": "0", "tls-auth-clients": "yes", "tls-replication": "yes"}
	if cluster {
		want["tls-cluster"] = "yes"
	}
	for _, s := range servers {
		for name, v := range want {
			got, err := s.Do(ctx, "CONFIG", "GET", name)
			if err != nil {
				t.Fatalf("%s: CONFIG GET %s: %v", s.Addr, name, err)
			}
			if got != name+"\n"+v {
				t.Fatalf("%s: CONFIG GET %s = %q, want %s", s.Addr, name, got, v)
			}
		}
	}
}

// tlsInvalidates runs cdcd against a TLS-only Redis in mode through c (a
// client of the same Redis): a transaction's keys go and its revisions
// move. Then cdcd without the client certificate, which every server
// demands: /readyz names the refused certificate, and nothing is
// confirmed.
func tlsInvalidates(t *testing.T, e *env, c redis.UniversalClient, mode, url string, ca *testenv.CA) {
	t.Helper()
	ctx := context.Background()
	d := e.startDaemon(tlsRedisVars(mode, url, ca, true)...)
	keys := append(runKeys(1, 30), "state:summary:core")
	setAll(t, c, keys...)
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, 30) g;
		INSERT INTO topics (title) VALUES ('t')`)
	waitGone(t, c, "every key over TLS", keys...)
	e.waitConfirmed(end, 20*time.Second)
	for _, rev := range []string{"state:summary:rev:core", "nodb:1:climate:rev", "nodb:30:climate:rev"} {
		if c.Get(ctx, rev).Val() == "" {
			t.Errorf("revision %s not set over TLS", rev)
		}
	}
	d.stop(syscall.SIGTERM, 10*time.Second)

	d = e.spawn(tlsRedisVars(mode, url, ca, false)...)
	d.waitUnready(30*time.Second, "redis")
	_, body, err := d.get("/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "asked for a TLS client certificate") {
		t.Errorf("/readyz does not say the certificate was refused: %s", body)
	}
	_, end = e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (31, 's', 'h')`)
	time.Sleep(2 * time.Second)
	if got := e.confirmed(); got >= end {
		t.Fatalf("confirmed %s past %s without reaching Redis", got, end)
	}
}

// cdcd against a TLS-only Cluster of 3 masters (no plain-text port, the
// cluster bus and replication on TLS, client certificates demanded).
func TestTLSCluster(t *testing.T) {
	ca := testenv.MustCA(t)
	cl := testenv.MustRedisCluster(t, 3, 1, testenv.WithTLS(ca, testenv.RequireClientCert))
	assertTLSOnly(t, cl.Nodes, true)
	e := newEnv(t)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), TLSConfig: ca.ClientConfig()})
	defer cc.Close()
	tlsInvalidates(t, e, cc, "cluster", cl.URL(), ca)
}

// cdcd against a TLS-only Sentinel group: the sentinels and the data nodes
// serve TLS only and demand client certificates; the sentinels reach the
// data nodes, and the replica its primary, over TLS.
func TestTLSSentinel(t *testing.T) {
	ca := testenv.MustCA(t)
	sg := testenv.MustRedisSentinel(t, 1, testenv.WithTLS(ca, testenv.RequireClientCert))
	assertTLSOnly(t, sg.Nodes, false) // a sentinel has no CONFIG; the harness reaches it over TLS
	e := newEnv(t)
	fc := redis.NewFailoverClient(&redis.FailoverOptions{
		MasterName: sentinelMaster(t, sg), SentinelAddrs: sentinelAddrs(sg), TLSConfig: ca.ClientConfig(),
	})
	defer fc.Close()
	tlsInvalidates(t, e, fc, "sentinel", sg.URL(), ca)
}
