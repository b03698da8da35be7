package testenv

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// SentinelMasterName is the name the sentinels know the primary by.
	SentinelMasterName = "cdcdmaster"

	sentinelCount        = 3
	sentinelConfName     = "sentinel.conf"
	sentinelStartTimeout = 2 * time.Minute

	// The sentinels log in to the data servers as a user of their own,
	// so that a replica can deny them REPLICAOF (see StartRedisSentinel)
	// while the default user, the harness's and the tests', keeps it.
	sentinelUser     = "cdcd-sentinel"
	sentinelPassword = "cdcd-sentinel-password"
)

// sentinelDebug speeds up what a Sentinel group does on timers, so that
// tests take seconds: INFO every 250ms (instead of 10s) lets the sentinels
// see a new replica, a changed replica-priority or a promotion at once, and
// hello messages every 500ms (instead of 2s) let them find each other and
// turn a returning old primary into a replica after 2s (instead of 8s).
//
// PINGs every 400ms (instead of 1s) keep the short down-after-milliseconds
// from making a healthy server look down. A sentinel drops its links to a
// new primary when it switches to it and reconnects only a ping period
// after its last attempt; with the default period, equal to
// down-after-milliseconds, the new primary could be held down at once,
// and, counting the other sentinels' votes from the failover just done, be
// failed over again: to the empty old primary if it had been restarted
// meanwhile. The period must not be much shorter either: with the primary
// down, a sentinel promotes only a replica whose INFO (asked every second
// then) is younger than five ping periods.
var sentinelDebug = []string{"SENTINEL", "DEBUG", "info-period", "250", "publish-period", "500", "ping-period", "400"}

// RedisSentinel is a running Redis primary with replicas and three
// sentinels watching it, all private processes on 127.0.0.1.
type RedisSentinel struct {
	MasterName string
	Sentinels  []*Redis
	// Nodes holds the data servers in start order: Nodes[0] was started
	// as the primary, the others as its replicas. Which is the primary
	// now, Primary tells.
	Nodes []*Redis

	tls     bool
	proxies map[*Redis]*Proxy // replica -> the proxy it replicates through

	mu     sync.Mutex
	pinned bool // the proxied replicas refuse the sentinels REPLICAOF (see StartRedisSentinel)

	stopOnce sync.Once
	stopErr  error
}

// StartRedisSentinel starts a primary, replicas replicas of it and three
// sentinels (redis-server FILE --sentinel) that monitor it under the name
// SentinelMasterName with quorum 2, down-after-milliseconds 1000 and
// failover-timeout 5000, each process on its own free port; and waits until
// the replicas have synced and every sentinel agrees on the primary, sees
// every replica and can reach a quorum. A failover then takes a second or
// two. Needs Redis 7.0 or newer, for SENTINEL DEBUG (see sentinelDebug).
//
// With WithReplicaProxy, each replica replicates through its own Proxy in
// front of the primary (ReplicaProxy), which can cut it off the replication
// stream while the sentinels still see it healthy: the failover to such a
// replica is how Redis loses acknowledged writes. A sentinel would repair a
// replica whose primary address is not the primary's after
// failover-timeout ("+fix-slave-config"), taking it off the proxy; so those
// replicas deny the sentinels' user REPLICAOF and SLAVEOF until the primary
// is gone (KillPrimary) or, in Failover, the replica is the new primary.
//
// Options: WithTLS (replication and Sentinel links use TLS too) and
// WithACLUser (on the data servers). The group keeps running after ctx
// ends, until Stop; it never uses CDCD_TEST_REDIS_URL.
func StartRedisSentinel(ctx context.Context, replicas int, opts ...RedisOption) (_ *RedisSentinel, err error) {
	if replicas < 0 {
		return nil, fmt.Errorf("start redis sentinel: %d replicas", replicas)
	}
	o, err := collectRedisOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("start redis sentinel: %w", err)
	}
	s := &RedisSentinel{MasterName: SentinelMasterName, tls: o.ca != nil, proxies: map[*Redis]*Proxy{}}
	dataOpts := o
	dataOpts.users = append(slices.Clip(o.users),
		[]string{"ACL", "SETUSER", sentinelUser, "reset", "on", ">" + sentinelPassword, "~*", "&*", "+@all"})
	defer func() {
		if err != nil {
			_ = s.Stop()
			err = fmt.Errorf("start redis sentinel: %w", err)
		}
	}()
	if err := s.startData(ctx, replicas, dataOpts); err != nil {
		return nil, err
	}
	if o.replicaProxy {
		if err := s.pin(ctx); err != nil {
			return nil, err
		}
	}
	sentinelOpts := o
	sentinelOpts.users = nil // a sentinel has no data to guard
	conf := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s 1000\n"+
		"sentinel failover-timeout %[1]s 5000\n"+
		"sentinel auth-user %[1]s %[3]s\n"+
		"sentinel auth-pass %[1]s %[4]s\n", s.MasterName, s.Nodes[0].Port, sentinelUser, sentinelPassword)
	for range sentinelCount {
		n, err := startRedisServer(ctx, redisSpec{
			conf: conf, confName: sentinelConfName, args: []string{"--sentinel"},
			keep: []string{sentinelConfName}, opts: sentinelOpts,
		})
		if err != nil {
			return nil, err
		}
		s.Sentinels = append(s.Sentinels, n)
		if err := speedUp(ctx, n); err != nil {
			return nil, err
		}
	}
	if err := poll(ctx, s.ready); err != nil {
		return nil, fmt.Errorf("wait for the sentinels: %w", err)
	}
	return s, nil
}

// startData starts the primary and its replicas and waits until they have
// synced.
func (s *RedisSentinel) startData(ctx context.Context, replicas int, o redisOptions) error {
	// A replica's first sync would wait 5s for others to share it.
	args := []string{"--repl-diskless-sync-delay", "0"}
	primary, err := startRedisServer(ctx, redisSpec{args: args, opts: o})
	if err != nil {
		return err
	}
	s.Nodes = append(s.Nodes, primary)
	for range replicas {
		target := primary.Port
		var p *Proxy
		if o.replicaProxy {
			if p, err = StartProxy(primary.Addr); err != nil {
				return err
			}
			target = p.Port
		}
		r, err := startRedisServer(ctx, redisSpec{
			args: append(slices.Clip(args), "--replicaof", "127.0.0.1", strconv.Itoa(target)),
			opts: o,
		})
		if err != nil {
			if p != nil {
				_ = p.Close()
			}
			return err
		}
		s.Nodes = append(s.Nodes, r)
		if p != nil {
			s.proxies[r] = p
		}
	}
	err = poll(ctx, func(ctx context.Context) error {
		for _, r := range s.Nodes[1:] {
			if err := replicationIs(ctx, r, "master_link_status", "up"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("wait for the replicas to sync: %w", err)
	}
	return nil
}

// speedUp applies sentinelDebug to sentinel n.
func speedUp(ctx context.Context, n *Redis) error {
	if _, err := n.Do(ctx, sentinelDebug...); err != nil {
		return fmt.Errorf("sentinel %s (SENTINEL DEBUG needs Redis 7.0 or newer): %w", n.Addr, err)
	}
	return nil
}

// ready reports why the group is not ready yet: every sentinel must name
// the first running data server as the primary, see every replica healthy
// and reach a quorum with the others.
func (s *RedisSentinel) ready(ctx context.Context) error {
	for _, sn := range s.Sentinels {
		addr, err := s.masterAddr(ctx, sn)
		if err != nil {
			return err
		}
		if addr != s.Nodes[0].Addr {
			return fmt.Errorf("sentinel %s names %s as the primary", sn.Addr, addr)
		}
		q, err := sn.Do(ctx, "SENTINEL", "CKQUORUM", s.MasterName)
		if err != nil {
			return fmt.Errorf("sentinel %s: %w", sn.Addr, err)
		}
		if !strings.HasPrefix(q, fmt.Sprintf("OK %d usable", sentinelCount)) {
			return fmt.Errorf("sentinel %s: %s", sn.Addr, q)
		}
		reps, err := s.replicaViews(ctx, sn)
		if err != nil {
			return err
		}
		for _, r := range s.Nodes[1:] {
			v, ok := reps[r.Addr]
			if !ok || v["flags"] != "slave" {
				return fmt.Errorf("sentinel %s does not see replica %s as healthy (%q)", sn.Addr, r.Addr, v["flags"])
			}
		}
	}
	return nil
}

// masterAddr asks sentinel sn where the primary is.
func (s *RedisSentinel) masterAddr(ctx context.Context, sn *Redis) (string, error) {
	reply, err := sn.Do(ctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", s.MasterName)
	if err != nil {
		return "", fmt.Errorf("sentinel %s: %w", sn.Addr, err)
	}
	host, port, ok := strings.Cut(reply, "\n")
	if !ok {
		return "", fmt.Errorf("sentinel %s: primary address %q", sn.Addr, reply)
	}
	return host + ":" + port, nil
}

// replicaViews returns SENTINEL REPLICAS as sentinel sn sees them, each
// replica's fields by its address. Do flattens the reply into one list of
// field names and values; each replica's fields begin with "name".
func (s *RedisSentinel) replicaViews(ctx context.Context, sn *Redis) (map[string]map[string]string, error) {
	reply, err := sn.Do(ctx, "SENTINEL", "REPLICAS", s.MasterName)
	if err != nil {
		return nil, fmt.Errorf("sentinel %s: %w", sn.Addr, err)
	}
	views := map[string]map[string]string{}
	if reply == "" {
		return views, nil
	}
	f := strings.Split(reply, "\n")
	var cur map[string]string
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == "name" {
			cur = map[string]string{}
			views[f[i+1]] = cur // the name is ip:port
		}
		if cur != nil {
			cur[f[i]] = f[i+1]
		}
	}
	return views, nil
}

// MustRedisSentinel starts a group with StartRedisSentinel or fails t (it
// never skips), and stops the group when t ends, also when t fails midway.
func MustRedisSentinel(t testing.TB, replicas int, opts ...RedisOption) *RedisSentinel {
	t.Helper()
	return mustStart(t, sentinelStartTimeout, func(ctx context.Context) (*RedisSentinel, error) {
		return StartRedisSentinel(ctx, replicas, opts...)
	}, (*RedisSentinel).Stop)
}

// URL returns a URL for go-redis's ParseFailoverURL naming every sentinel:
// redis://s1:p1?master_name=NAME&addr=s2:p2&addr=s3:p3 (rediss:// with
// TLS).
func (s *RedisSentinel) URL() string {
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = sn.Addr
	}
	return groupURL(s.tls, addrs, "master_name="+s.MasterName)
}

// node returns the data server at addr, nil if there is none.
func (s *RedisSentinel) node(addr string) *Redis { return serverAt(s.Nodes, addr) }

// firstSentinel returns the first running sentinel.
func (s *RedisSentinel) firstSentinel() (*Redis, error) {
	for _, sn := range s.Sentinels {
		if sn.running() {
			return sn, nil
		}
	}
	return nil, errors.New("no sentinel is running")
}

// Primary returns the data server the first running sentinel names as the
// primary. Mid-failover the sentinels may disagree: WaitFailover first.
func (s *RedisSentinel) Primary(ctx context.Context) (*Redis, error) {
	sn, err := s.firstSentinel()
	if err != nil {
		return nil, fmt.Errorf("sentinel primary: %w", err)
	}
	addr, err := s.masterAddr(ctx, sn)
	if err != nil {
		return nil, fmt.Errorf("sentinel primary: %w", err)
	}
	n := s.node(addr)
	if n == nil {
		return nil, fmt.Errorf("sentinel primary: %s is not one of ours", addr)
	}
	return n, nil
}

// Replicas returns the running data servers the first running sentinel
// knows as replicas, in start order.
func (s *RedisSentinel) Replicas(ctx context.Context) ([]*Redis, error) {
	sn, err := s.firstSentinel()
	if err != nil {
		return nil, fmt.Errorf("sentinel replicas: %w", err)
	}
	views, err := s.replicaViews(ctx, sn)
	if err != nil {
		return nil, fmt.Errorf("sentinel replicas: %w", err)
	}
	var reps []*Redis
	for _, n := range s.Nodes {
		if _, ok := views[n.Addr]; ok && n.running() {
			reps = append(reps, n)
		}
	}
	return reps, nil
}

// WaitReplicated waits until every replica has applied all that the
// primary had written when WaitReplicated was called, as
// RedisCluster.WaitReplicated does for a Cluster.
func (s *RedisSentinel) WaitReplicated(ctx context.Context) error {
	primary, err := s.Primary(ctx)
	if err != nil {
		return fmt.Errorf("wait for the replicas: %w", err)
	}
	replicas, err := s.Replicas(ctx)
	if err != nil {
		return fmt.Errorf("wait for the replicas: %w", err)
	}
	if err := waitReplicated(ctx, primary, replicas); err != nil {
		return fmt.Errorf("wait for the replicas of %s: %w", primary.Addr, err)
	}
	return nil
}

// ReplicaProxy returns the proxy between replica and the first primary
// (WithReplicaProxy), nil if it has none. Blackhole cuts the replica off
// the replication stream unnoticed: it goes on believing itself in sync,
// and so do the sentinels. A failover moves replication off the proxies.
func (s *RedisSentinel) ReplicaProxy(replica *Redis) *Proxy { return s.proxies[replica] }

// Restart starts a data server or a sentinel of the group again (after
// Kill, or stopping it first if it runs) on the same port. A data server
// comes back empty, with the role it was started with (a sentinel turns a
// returning old primary into a replica); a sentinel comes back with its
// sentinel.conf, so as the same member of the group.
func (s *RedisSentinel) Restart(ctx context.Context, n *Redis) error {
	if err := n.Restart(ctx); err != nil {
		return fmt.Errorf("sentinel group restart %s: %w", n.Addr, err)
	}
	if slices.Contains(s.Sentinels, n) {
		if err := speedUp(ctx, n); err != nil {
			return fmt.Errorf("sentinel group restart: %w", err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, proxied := s.proxies[n]; proxied && s.pinned {
		if err := setPin(ctx, n, true); err != nil {
			return fmt.Errorf("sentinel group restart: %w", err)
		}
	}
	return nil
}

// Stop closes the proxies, crashes every process (there is nothing to
// flush) and removes their directories. It is idempotent.
func (s *RedisSentinel) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		for _, p := range s.proxies {
			errs = append(errs, p.Close())
		}
		errs = append(errs, stopRedisServers(s.Sentinels), stopRedisServers(s.Nodes))
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}
