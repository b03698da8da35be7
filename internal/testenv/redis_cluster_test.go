package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterClient returns a go-redis client for c's URL, closed when t ends.
func clusterClient(t *testing.T, c *RedisCluster, ca *CA) *redis.ClusterClient {
	t.Helper()
	opt, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatalf("ParseClusterURL(%s): %v", c.URL(), err)
	}
	if !slices.Equal(opt.Addrs, c.Addrs()) {
		t.Fatalf("ParseClusterURL(%s) addresses %v, want %v", c.URL(), opt.Addrs, c.Addrs())
	}
	if ca != nil {
		opt.TLSConfig = ca.ClientConfig()
	}
	cc := redis.NewClusterClient(opt)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// writeEveryMaster writes n keys through cc, checks that every master
// holds some and that every replica has them all, and returns them.
func writeEveryMaster(t *testing.T, ctx context.Context, c *RedisCluster, cc *redis.ClusterClient, n int) []string {
	t.Helper()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("key:%d", i)
		if err := cc.Set(ctx, keys[i], keys[i], 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, sh := range shards {
		size, err := sh.Master.Do(ctx, "DBSIZE")
		if err != nil || size == "0" {
			t.Fatalf("master %s holds %s keys (%v)", sh.Master.Addr, size, err)
		}
		for _, r := range sh.Replicas {
			if got, err := r.Do(ctx, "DBSIZE"); err != nil || got != size {
				t.Fatalf("replica %s holds %s keys, its master %s (%v)", r.Addr, got, size, err)
			}
		}
	}
	return keys
}

// readAll reads keys through cc until every one has its value. A failed
// read reloads cc's slot map: go-redis reloads it by itself on MOVED but
// not when a master is unreachable, which leaves the slots of a dead master
// unreadable until ClusterStateReloadInterval (60s) has passed.
func readAll(t *testing.T, ctx context.Context, cc *redis.ClusterClient, keys []string) {
	t.Helper()
	err := poll(ctx, func(ctx context.Context) error {
		for _, k := range keys {
			if v, err := cc.Get(ctx, k).Result(); err != nil || v != k {
				cc.ReloadState(ctx)
				return fmt.Errorf("GET %s = %q, %v", k, v, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRedisCluster: a 3-master cluster serves keys on every master through
// go-redis, survives KillMaster with the replica promoted and every key
// kept, takes the old master back as a replica, and fails over gracefully.
func TestRedisCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := MustRedisCluster(t, 3, 1)
	if len(c.Nodes) != 6 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(shards) != 3 || shards[0].Slots[0][0] != 0 {
		t.Fatalf("shards %+v", shards)
	}
	for _, sh := range shards {
		if len(sh.Replicas) != 1 {
			t.Fatalf("master %s has replicas %v", sh.Master.Addr, sh.Replicas)
		}
	}
	cc := clusterClient(t, c, nil)
	keys := writeEveryMaster(t, ctx, c, cc, 200)

	victim := shards[0]
	killed, err := c.KillMaster(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if killed != victim.Master {
		t.Fatalf("killed %s, want %s", killed.Addr, victim.Master.Addr)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	after, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after[0].Master != victim.Replicas[0] || len(after[0].Replicas) != 0 {
		t.Fatalf("after KillMaster: shard 0 is %s with %v, want %s alone", after[0].Master.Addr, after[0].Replicas, victim.Replicas[0].Addr)
	}
	readAll(t, ctx, cc, keys)

	if err := c.Restart(ctx, killed); err != nil {
		t.Fatal(err)
	}
	if after, err = c.Shards(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(after[0].Replicas, []*Redis{killed}) {
		t.Fatalf("after Restart: shard 0 replicas %v, want %s", after[0].Replicas, killed.Addr)
	}

	if err := c.Failover(ctx, killed.Addr); err != nil {
		t.Fatal(err)
	}
	if after, err = c.Shards(ctx); err != nil {
		t.Fatal(err)
	}
	if after[0].Master != killed {
		t.Fatalf("after Failover: shard 0 master %s, want %s", after[0].Master.Addr, killed.Addr)
	}
	readAll(t, ctx, cc, keys)
}

// TestRedisClusterByHand: without redis-cli (and with fewer than three
// masters, which redis-cli refuses) the harness joins the nodes itself.
func TestRedisClusterByHand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := startRedisCluster(ctx, 2, 1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := slotRanges(2)
	for i, sh := range shards {
		if !slices.Equal(sh.Slots, want[i:i+1]) || !slices.Equal(sh.Replicas, c.Nodes[2+i:3+i]) || sh.Master != c.Nodes[i] {
			t.Fatalf("shard %d: %s %v with %v", i, sh.Master.Addr, sh.Slots, sh.Replicas)
		}
	}
	writeEveryMaster(t, ctx, c, clusterClient(t, c, nil), 50)
	wantStopped(t, c.Nodes, c.Stop)
}

// wantStopped calls stop and wants every one of servers gone: its process
// and its directory.
func wantStopped(t *testing.T, servers []*Redis, stop func() error) {
	t.Helper()
	pids := map[*Redis]int{}
	for _, n := range servers {
		n.mu.Lock()
		if n.cmd != nil {
			pids[n] = n.cmd.Process.Pid
		}
		n.mu.Unlock()
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	for _, n := range servers {
		if st, ok := readProcStat(strconv.Itoa(pids[n])); pids[n] != 0 && ok && st.alive() {
			t.Errorf("server %s (pid %d) still runs", n.Addr, pids[n])
		}
		if _, err := os.Stat(n.dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("server %s: directory %s left behind (%v)", n.Addr, n.dir, err)
		}
	}
}

func TestRedisClusterMigrateSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := MustRedisCluster(t, 3, 1)
	cc := clusterClient(t, c, nil)
	keys := []string{"{m}a", "{m}b", "{m}c"}
	for _, k := range keys {
		if err := cc.Set(ctx, k, k, 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	slot := int(cc.ClusterKeySlot(ctx, keys[0]).Val())
	from, err := cc.MasterForKey(ctx, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	shards, err := c.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to := shards[0].Master
	if to.Addr == from.Options().Addr {
		to = shards[1].Master
	}
	m, err := c.BeginMigration(ctx, slot, to)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := m.MoveKeys(ctx, 1, 0); err != nil || n != 1 {
		t.Fatalf("MoveKeys = %d, %v; want 1 key moved", n, err)
	}
	// Half moved: the old owner sends a client asking for a key it no
	// longer holds to the new one.
	moved, err := to.Do(ctx, "CLUSTER", "GETKEYSINSLOT", strconv.Itoa(slot), "1")
	if err != nil || moved == "" {
		t.Fatalf("the new owner holds no key of the slot: %q, %v", moved, err)
	}
	if _, err := m.From.Do(ctx, "GET", moved); err == nil || !strings.HasPrefix(err.Error(), "redis GET: ASK "+strconv.Itoa(slot)+" "+to.Addr) {
		t.Fatalf("GET %s on the old owner: %v, want ASK to %s", moved, err, to.Addr)
	}
	readAll(t, ctx, cc, keys)
	if err := m.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if size, err := to.Do(ctx, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); err != nil || size != "3" {
		t.Fatalf("the new owner holds %s keys of the slot (%v)", size, err)
	}
	// The old owner redirects: MOVED.
	if _, err := m.From.Do(ctx, "GET", keys[0]); err == nil || !strings.HasPrefix(err.Error(), "redis GET: MOVED "+strconv.Itoa(slot)+" "+to.Addr) {
		t.Fatalf("GET on the old owner: %v, want MOVED to %s", err, to.Addr)
	}
	readAll(t, ctx, cc, keys)

	// MigrateSlot does it all, here back to the old owner.
	if n, err := c.MigrateSlot(ctx, slot, m.From, 10*time.Millisecond); err != nil || n != len(keys) {
		t.Fatalf("MigrateSlot = %d, %v; want %d keys moved", n, err, len(keys))
	}
	if err := c.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	readAll(t, ctx, cc, keys)
}
