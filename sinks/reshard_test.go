package sinks

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
)

// TestPatternScanFollowsKeysMovedDuringIt moves a hash slot, keys and all,
// from one master to another while a pattern scan runs, at the worst
// moment: the new master has been scanned already and the old one not yet.
// Neither scan sees the keys; the scan must notice that slots moved and
// scan again.
func TestPatternScanFollowsKeysMovedDuringIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testenv.StartRedisCluster(ctx, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	m := NewMetrics(nil)
	r, err := NewRedis(RedisConfig{URL: c.URL(), Mode: ModeCluster, Slot: "s"}, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	cc := r.client.(*redis.ClusterClient)

	for i, tc := range []struct {
		name string
		scan func(pattern string) error
	}{
		{"unlink", func(pattern string) error { return r.unlinkMatching(ctx, pattern) }},
		{"revisions", func(pattern string) error {
			// What scanEach returns, the job sets; here it deletes.
			return r.scanEach(ctx, pattern, func(keys []string) error { return cc.Unlink(ctx, keys...).Err() })
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := fmt.Sprintf("moving%d", i)
			slot := hashSlot(tag)
			var keys []string
			for j := range 20 {
				k := fmt.Sprintf("pat:{%s}:%d", tag, j)
				keys = append(keys, k)
				if err := cc.Set(ctx, k, "stale", 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			from, to := masterAndAnother(t, c, cc, keys[0])
			toScanned := make(chan struct{})
			var once, moved sync.Once
			testHookScanNode = func(addr string, finished bool) {
				switch {
				case addr == to.Addr && finished:
					once.Do(func() { close(toScanned) })
				case addr == from.Options().Addr && !finished:
					<-toScanned
					moved.Do(func() {
						mig, err := c.BeginMigration(ctx, slot, to)
						if err == nil {
							err = mig.Finish(ctx)
						}
						if err != nil {
							t.Error(err)
						}
					})
				}
			}
			t.Cleanup(func() { testHookScanNode = nil })
			before := counterValue(t, m.rescans)
			if err := tc.scan("pat:*"); err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, k := range keys {
				if cc.Exists(ctx, k).Val() == 1 {
					left = append(left, k)
				}
			}
			if len(left) > 0 {
				t.Errorf("%d of %d keys matching the pattern survived the scan (slot %d moved from %s to %s): %v",
					len(left), len(keys), slot, from.Options().Addr, to.Addr, left)
			}
			if n := counterValue(t, m.rescans) - before; n != 1 {
				t.Errorf("rescans: %v, want 1", n)
			}
		})
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		t.Fatal(err)
	}
	return d.GetCounter().GetValue()
}

// masterAndAnother returns the client of the master that serves key, and
// another master of c.
func masterAndAnother(t *testing.T, c *testenv.RedisCluster, cc *redis.ClusterClient, key string) (*redis.Client, *testenv.Redis) {
	t.Helper()
	from, err := cc.MasterForKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		if n.Addr != from.Options().Addr {
			return from, n
		}
	}
	t.Fatal("the cluster has one master")
	return nil, nil
}
