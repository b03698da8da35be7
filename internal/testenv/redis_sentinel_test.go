package testenv

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// failoverClient returns a go-redis client for s's URL, closed when t ends.
func failoverClient(t *testing.T, s *RedisSentinel, ca *CA) *redis.Client {
	t.Helper()
	opt, err := redis.ParseFailoverURL(s.URL())
	if err != nil {
		t.Fatalf("ParseFailoverURL(%s): %v", s.URL(), err)
	}
	if len(opt.SentinelAddrs) != sentinelCount || opt.MasterName != SentinelMasterName {
		t.Fatalf("ParseFailoverURL(%s) = %v, %q", s.URL(), opt.SentinelAddrs, opt.MasterName)
	}
	if ca != nil {
		opt.TLSConfig = ca.ClientConfig()
	}
	c := redis.NewFailoverClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

// setAndWait sets keys to "v" on one connection of c, then WAITs (up to a
// second) for replicas replicas and wants acked of them to have the writes.
func setAndWait(t *testing.T, ctx context.Context, c *redis.Client, replicas, acked int, keys ...string) {
	t.Helper()
	conn := c.Conn() // WAIT counts the writes of its own connection
	defer conn.Close()
	for _, k := range keys {
		if err := conn.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := conn.Do(ctx, "WAIT", replicas, 1000).Int(); err != nil || n != acked {
		t.Fatalf("WAIT %d = %d, %v; want %d", replicas, n, err, acked)
	}
}

// waitReplicaOf waits until n is a replica in sync with primary.
func waitReplicaOf(t *testing.T, ctx context.Context, n, primary *Redis) {
	t.Helper()
	want := map[string]string{"role": "slave", "master_port": strconv.Itoa(primary.Port), "master_link_status": "up"}
	err := poll(ctx, func(ctx context.Context) error {
		for field, v := range want {
			if err := replicationIs(ctx, n, field, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisSentinelKillPrimary: the sentinels promote the replica when the
// primary dies, go-redis follows through the URL, writes the replica had
// are kept, and the old primary returns as a replica.
func TestRedisSentinelKillPrimary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := MustRedisSentinel(t, 1)
	if len(s.Sentinels) != 3 || len(s.Nodes) != 2 {
		t.Fatalf("%d sentinels, %d data servers", len(s.Sentinels), len(s.Nodes))
	}
	if p, err := s.Primary(ctx); err != nil || p != s.Nodes[0] {
		t.Fatalf("Primary = %v, %v; want %s", p, err, s.Nodes[0].Addr)
	}
	if r, err := s.Replicas(ctx); err != nil || len(r) != 1 || r[0] != s.Nodes[1] {
		t.Fatalf("Replicas = %v, %v", r, err)
	}
	c := failoverClient(t, s, nil)
	setAndWait(t, ctx, c, 1, 1, "k")

	old, err := s.KillPrimary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if p != s.Nodes[1] {
		t.Fatalf("new primary %s, want %s", p.Addr, s.Nodes[1].Addr)
	}
	// go-redis asks the sentinels again once its connection breaks.
	err = poll(ctx, func(ctx context.Context) error { return c.Set(ctx, "after", "1", 0).Err() })
	if err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("GET k after failover = %q, %v", v, err)
	}
	if err := s.Restart(ctx, old); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, sn := range s.Sentinels {
				t.Logf("sentinel %s:\n%s", sn.Addr, sn.Log())
			}
		}
	})
	waitReplicaOf(t, ctx, old, p)
}

// TestRedisSentinelLostWrites documents the fault of issue 13: a replica cut
// off the replication stream goes on looking healthy, the sentinels fail
// over to it (asked to, or because the primary died), and the writes the
// old primary acknowledged meanwhile are gone, from the new primary and,
// once it follows, from the old one.
func TestRedisSentinelLostWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill bool
	}{{"failover", false}, {"primary killed", true}} {
		t.Run(tc.name, func(t *testing.T) { lostWrites(t, tc.kill) })
	}
}

func lostWrites(t *testing.T, kill bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := MustRedisSentinel(t, 2, WithReplicaProxy())
	old, cut, other := s.Nodes[0], s.Nodes[1], s.Nodes[2]
	if s.ReplicaProxy(cut) == nil || s.ReplicaProxy(old) != nil {
		t.Fatal("replicas without proxies")
	}
	c := failoverClient(t, s, nil)
	setAndWait(t, ctx, c, 2, 2, "kept")

	// A sentinel would move a replica off its proxy after failover-timeout
	// (+fix-slave-config), and the fault would not happen. Shorten it and
	// check that the proxied replicas stay where they are.
	setFailoverTimeout(t, ctx, s, "300")
	time.Sleep(time.Second)
	info, err := cut.Do(ctx, "INFO", "replication")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := infoField(info, "master_port"), strconv.Itoa(s.ReplicaProxy(cut).Port); got != want {
		t.Fatalf("the replica replicates from port %s, not through its proxy (%s)", got, want)
	}
	if !strings.Contains(s.Sentinels[0].Log(), "+fix-slave-config") {
		t.Errorf("the sentinel did not try to move the replica off its proxy; log:\n%s", s.Sentinels[0].Log())
	}
	// Long enough for a failover, short enough for the sentinels to keep
	// trying through it.
	setFailoverTimeout(t, ctx, s, "2000")

	s.ReplicaProxy(cut).Blackhole()
	// The old primary acknowledges them, the other replica has them, and
	// WAIT would tell that the cut-off one does not.
	const lost = 100
	keys := make([]string, lost)
	for i := range keys {
		keys[i] = fmt.Sprintf("lost:%d", i)
	}
	setAndWait(t, ctx, c, 2, 1, keys...)
	for _, n := range []*Redis{old, other} {
		if v, err := n.Do(ctx, "GET", "lost:99"); err != nil || v != "v" {
			t.Fatalf("%s: GET lost:99 = %q, %v", n.Addr, v, err)
		}
	}
	// The cut-off replica looks healthy to the sentinels all along.
	if r, err := s.Replicas(ctx); err != nil || len(r) != 2 {
		t.Fatalf("Replicas = %v, %v", r, err)
	}

	if kill {
		if err := s.Prefer(ctx, cut); err != nil {
			t.Fatal(err)
		}
		if _, err := s.KillPrimary(ctx); err != nil {
			t.Fatal(err)
		}
		if p, err := s.WaitFailover(ctx, old); err != nil || p != cut {
			t.Fatalf("WaitFailover = %v, %v; want %s", p, err, cut.Addr)
		}
	} else if err := s.Failover(ctx, cut); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Primary(ctx); err != nil || p != cut {
		t.Fatalf("Primary = %v, %v; want %s", p, err, cut.Addr)
	}
	// Read from the servers themselves: go-redis may still be connected to
	// the old primary, which serves until the sentinels demote it.
	gone := func(n *Redis) {
		t.Helper()
		if kept, err := n.Do(ctx, append([]string{"EXISTS"}, keys...)...); err != nil || kept != "0" {
			t.Fatalf("%s: %s of %d writes made while the replica was cut off survived (%v)", n.Addr, kept, lost, err)
		}
		if v, err := n.Do(ctx, "GET", "kept"); err != nil || v != "v" {
			t.Fatalf("%s: GET kept = %q, %v", n.Addr, v, err)
		}
	}
	gone(cut)

	// The old primary (restarted, empty, if it was killed) becomes a
	// replica of the new one: the writes are gone for good, and go-redis,
	// following the sentinels, finds none of them.
	if kill {
		if err := s.Restart(ctx, old); err != nil {
			t.Fatal(err)
		}
	}
	waitReplicaOf(t, ctx, old, cut)
	waitReplicaOf(t, ctx, other, cut)
	gone(old)
	gone(other)
	err = poll(ctx, func(ctx context.Context) error {
		if err := c.Set(ctx, "after", "1", 0).Err(); err != nil {
			return err
		}
		n, err := c.Exists(ctx, keys...).Result()
		if err == nil && n != 0 {
			err = fmt.Errorf("%d lost keys found through the client", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	proxy := s.ReplicaProxy(cut)
	wantStopped(t, append(slices.Clone(s.Nodes), s.Sentinels...), s.Stop)
	if conn, err := net.DialTimeout("tcp", proxy.Addr, time.Second); err == nil {
		conn.Close()
		t.Error("the replica's proxy still listens after Stop")
	}
}

func setFailoverTimeout(t *testing.T, ctx context.Context, s *RedisSentinel, ms string) {
	t.Helper()
	for _, sn := range s.Sentinels {
		if _, err := sn.Do(ctx, "SENTINEL", "SET", s.MasterName, "failover-timeout", ms); err != nil {
			t.Fatal(err)
		}
	}
}
