package sinks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis deployment shapes (CDCD_REDIS_MODE).
const (
	ModeStandalone = "standalone"
	ModeCluster    = "cluster"
	ModeSentinel   = "sentinel"
)

// TLSFiles names the PEM files of a TLS connection to Redis: the CA to
// trust, and a client certificate for servers that demand one.
type TLSFiles struct {
	CA, Cert, Key string
}

// newClient builds go-redis's client for the mode, from the URL as that
// mode's own parser reads it: ParseURL, ParseClusterURL
// (redis://h1:p1?addr=h2:p2&addr=…) or ParseFailoverURL
// (redis://s1:26379?master_name=NAME&addr=s2:26379…).
func newClient(cfg RedisConfig) (redis.UniversalClient, error) {
	switch cfg.Mode {
	case "", ModeStandalone:
		opt, err := redis.ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis URL: %w", err)
		}
		if opt.TLSConfig, err = withFiles(opt.TLSConfig, cfg.TLS); err != nil {
			return nil, err
		}
		opt.MaxRetries, opt.ContextTimeoutEnabled, opt.Protocol = sinkRetries, true, sinkProtocol
		opt.Dialer = dialer(opt, cfg.RawSockets)
		return redis.NewClient(opt), nil
	case ModeCluster:
		opt, err := redis.ParseClusterURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis cluster URL: %w", err)
		}
		if opt.TLSConfig, opt.Dialer, err = nodeDialer(opt.TLSConfig, opt.DialTimeout, cfg); err != nil {
			return nil, err
		}
		opt.MaxRetries, opt.ContextTimeoutEnabled, opt.Protocol = sinkRetries, true, sinkProtocol
		return redis.NewClusterClient(opt), nil
	case ModeSentinel:
		opt, err := redis.ParseFailoverURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("redis sentinel URL: %w", err)
		}
		if opt.MasterName == "" {
			return nil, errors.New("redis sentinel URL: no master_name")
		}
		if opt.TLSConfig, opt.Dialer, err = nodeDialer(opt.TLSConfig, opt.DialTimeout, cfg); err != nil {
			return nil, err
		}
		opt.MaxRetries, opt.ContextTimeoutEnabled, opt.Protocol = sinkRetries, true, sinkProtocol
		return redis.NewFailoverClient(opt), nil
	}
	return nil, fmt.Errorf("redis mode %q: not one of standalone, cluster, sentinel", cfg.Mode)
}

// What every mode's client is told:
//   - MaxRetries -1: the sink retries whole plans itself; the client's own
//     retries would only hide how long an attempt took;
//   - ContextTimeoutEnabled: callers' deadlines (the readiness probe's)
//     bound a command;
//   - RESP2: the sink uses no push notifications, and under RESP3 the
//     client peeks at the socket for them before commands.
const (
	sinkRetries  = -1
	sinkProtocol = 2
)

// nodeDialer returns the TLS config and dialer of a client that reaches
// several nodes: each node's certificate is verified under its own name.
func nodeDialer(base *tls.Config, dialTimeout time.Duration, cfg RedisConfig) (*tls.Config, func(context.Context, string, string) (net.Conn, error), error) {
	tc, err := withFiles(base, cfg.TLS)
	if err != nil {
		return nil, nil, err
	}
	if tc != nil {
		tc.ServerName = ""
	}
	return tc, dialer(&redis.Options{TLSConfig: tc, DialTimeout: dialTimeout}, cfg.RawSockets), nil
}

// withFiles adds the CA and the client certificate to the TLS config a
// rediss:// URL produced. Files without a rediss:// URL are an error: the
// connection would not use them.
func withFiles(base *tls.Config, f TLSFiles) (*tls.Config, error) {
	if f == (TLSFiles{}) {
		return base, nil
	}
	if base == nil {
		return nil, errors.New("redis TLS files are set but the URL is not rediss://")
	}
	cfg := base.Clone()
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("redis TLS CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redis TLS CA %s: no PEM certificate in it", f.CA)
		}
		cfg.RootCAs = pool
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("redis TLS: a client certificate needs both the certificate and the key file")
	}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("redis TLS client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// forEachMaster calls fn with the client of every master: one for a
// standalone server or a Sentinel group, each shard's in a Cluster (in
// parallel).
func (r *Redis) forEachMaster(ctx context.Context, fn func(ctx context.Context, c *redis.Client) error) error {
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, fn)
	case *redis.Client:
		return fn(ctx, c)
	}
	return fmt.Errorf("redis client %T: unknown shape", r.client)
}

// failed is told of every failed attempt to write to Redis. In a Cluster it
// asks for the slot map again: go-redis reloads it on MOVED, or after a
// minute, but not when a master it knows is unreachable — after a failover
// every attempt would go to the dead master until then.
func (r *Redis) failed(ctx context.Context) {
	if cc, ok := r.client.(*redis.ClusterClient); ok {
		cc.ReloadState(ctx)
		r.markKeys.Store(nil)
	}
}

// handshake runs the TLS handshake on c, a connection to addr. Under TLS
// 1.3 a server that demands a client certificate refuses a connection
// without one only after the handshake: its alert, or the reset that
// follows it, meets the first command and does not say why. So when the
// server asks for a certificate and cdcd has none, the connection's errors
// say so.
func handshake(ctx context.Context, c net.Conn, cfg *tls.Config, addr string) (net.Conn, error) {
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		// As tls.DialWithDialer does.
		cfg.ServerName, _, _ = net.SplitHostPort(addr)
	}
	asked := false
	if len(cfg.Certificates) == 0 && cfg.GetClientCertificate == nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			return &tls.Certificate{}, nil // none: the server decides
		}
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	if asked {
		return certlessConn{tc}, nil
	}
	return tc, nil
}

// certlessConn is a TLS connection to a server that asked for a client
// certificate cdcd does not have (see handshake). As with raw sockets (see
// dialer), the pool cannot peek at it while it is idle.
type certlessConn struct{ net.Conn }

func (c certlessConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, noCertificate(err)
}

func (c certlessConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, noCertificate(err)
}

// errNoClientCert is added to the failures of a connection to a server
// that asked for a client certificate cdcd does not have.
var errNoClientCert = errors.New("the server asked for a TLS client certificate and none is configured")

// noCertificate adds errNoClientCert to a connection's failure. The end of
// the stream and timeouts pass unchanged: callers compare and type-assert
// them. Both errors are wrapped side by side (two %w): go-redis strips one
// level of wrapping (errors.Unwrap) off a failed connection set-up, which
// leaves such an error whole.
func noCertificate(err error) error {
	var ne net.Error
	if err == nil || errors.Is(err, io.EOF) || errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return fmt.Errorf("%w (%w)", err, errNoClientCert)
}

// scanMasters calls scan with the client of every master, as forEachMaster
// does, for a pass of SCAN over the whole keyspace. In a Cluster a key
// that moves while the pass runs, from a part of its old master not yet
// scanned to a part of its new master scanned already, is seen by neither
// scan. So the masters' slots are read before and after the pass, and when
// any slot was half moved or changed hands meanwhile, the pass runs once
// more: a key missed by the first pass sits on its new master by then, and
// is missed again only if it moves a second time during the second.
func (r *Redis) scanMasters(ctx context.Context, pattern string, scan func(ctx context.Context, c *redis.Client) error) error {
	cc, ok := r.client.(*redis.ClusterClient)
	if !ok {
		return r.forEachMaster(ctx, scan)
	}
	before, err := slotLayout(ctx, cc)
	if err != nil {
		return err
	}
	if err := cc.ForEachMaster(ctx, scan); err != nil {
		return err
	}
	after, err := slotLayout(ctx, cc)
	if err != nil {
		return err
	}
	if before == after && !strings.Contains(after, "[") {
		return nil
	}
	r.m.rescans.Inc()
	r.log.Info("slots moved while a pattern was scanned; scanning again", "pattern", pattern)
	return cc.ForEachMaster(ctx, scan)
}

// slotLayout returns the slots every master serves, as its own line of
// CLUSTER NODES gives them (`id … 0-5460 [5461->-id]`), one line per master,
// sorted. A slot half moved shows in brackets.
func slotLayout(ctx context.Context, cc *redis.ClusterClient) (string, error) {
	var mu sync.Mutex
	var lines []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		nodes, err := c.ClusterNodes(ctx).Result()
		if err != nil {
			return fmt.Errorf("cluster nodes on %s: %w", c.Options().Addr, err)
		}
		for line := range strings.Lines(nodes) {
			f := strings.Fields(line)
			if len(f) >= 8 && slices.Contains(strings.Split(f[2], ","), "myself") {
				mu.Lock()
				lines = append(lines, f[0]+" "+strings.Join(f[8:], " "))
				mu.Unlock()
			}
		}
		return nil
	})
	slices.Sort(lines)
	return strings.Join(lines, "\n"), err
}

// testHookScanNode, set by tests only, is called before and after a
// pattern scan of the node at addr.
var testHookScanNode func(addr string, finished bool)
