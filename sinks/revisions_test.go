package sinks

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// TestRevisionsSetInBatches applies a batch that moves 603 revisions, on a
// standalone server and on a 3-master Cluster: a revision holding a later
// position stays, one holding something else is overwritten, and each
// master gets a few script calls, not one per revision. Then, with a slot
// half moved in the Cluster, the same holds through the fallback that sets
// them one by one. A gap's reset then moves them even backwards.
func TestRevisionsSetInBatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	single, err := testenv.StartRedis(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = single.Stop() })
	cluster, err := testenv.StartRedisCluster(ctx, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })

	for _, tc := range []struct {
		mode, url string
		moving    bool // a slot of some revisions half moved
	}{
		{ModeStandalone, single.URL, false},
		{ModeCluster, cluster.URL(), false},
		{ModeCluster, cluster.URL(), true},
	} {
		t.Run(fmt.Sprintf("%s moving=%v", tc.mode, tc.moving), func(t *testing.T) {
			r, err := NewRedis(RedisConfig{URL: tc.url, Mode: tc.mode, Slot: "s"}, NewMetrics(nil))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			rdb := r.client
			if err := r.forEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() }); err != nil {
				t.Fatal(err)
			}
			tag := "rev"
			if tc.moving {
				tag = "rev{moving}"
				slot := hashSlot(tag)
				_, to := masterAndAnother(t, cluster, r.client.(*redis.ClusterClient), tag)
				for i := range 20 {
					if err := rdb.Set(ctx, fmt.Sprintf("%s:%d", tag, i), "0/1", 0).Err(); err != nil {
						t.Fatal(err)
					}
				}
				m, err := cluster.BeginMigration(ctx, slot, to)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := m.MoveKeys(ctx, 10, 0); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := m.Finish(context.Background()); err != nil {
						t.Error(err)
					}
				})
			}
			key := func(i int) string { return fmt.Sprintf("%s:%d", tag, i) }
			ahead, garbage, hash := tag+":ahead", tag+":garbage", tag+":hash"
			for k, v := range map[string]string{ahead: "FF/0", garbage: "not a position"} {
				if err := rdb.Set(ctx, k, v, 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			if err := rdb.HSet(ctx, hash, "f", "v").Err(); err != nil {
				t.Fatal(err)
			}
			first := &rules.Plan{CommitLSN: pglogrepl.LSN(0x1_00000100)}
			for i := range 600 {
				first.Revisions = append(first.Revisions, rules.Revision{Key: key(i), Section: "s"})
			}
			for _, k := range []string{ahead, garbage, hash} {
				first.Revisions = append(first.Revisions, rules.Revision{Key: k, Section: "s"})
			}
			second := &rules.Plan{CommitLSN: pglogrepl.LSN(0x1_00000200)}
			for i := range 10 {
				second.Revisions = append(second.Revisions, rules.Revision{Key: key(i), Section: "s"})
			}
			evals := func() int {
				var mu sync.Mutex
				n := 0
				_ = r.forEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
					info := c.Info(ctx, "commandstats").Val()
					m := regexp.MustCompile(`cmdstat_eval:calls=(\d+)`).FindStringSubmatch(info)
					if m != nil {
						v, _ := strconv.Atoi(m[1])
						mu.Lock()
						n += v
						mu.Unlock()
					}
					return nil
				})
				return n
			}
			before := evals()
			if err := r.Apply(ctx, []*rules.Plan{first, second}); err != nil {
				t.Fatal(err)
			}
			calls := evals() - before
			want := map[string]string{ahead: "FF/0", garbage: "1/100", hash: "1/100", key(0): "1/200", key(9): "1/200", key(10): "1/100", key(599): "1/100"}
			for i := range 600 {
				if _, ok := want[key(i)]; !ok {
					want[key(i)] = "1/100"
					if i < 10 {
						want[key(i)] = "1/200"
					}
				}
			}
			for k, v := range want {
				if got, err := rdb.Get(ctx, k).Result(); got != v {
					t.Errorf("%s = %q (%v), want %q", k, got, err, v)
				}
			}
			// Three calls for 603 revisions a master at most, and its
			// write counter's. With the slot half moved, all but the 10
			// keys still on the old master are set again one per call.
			if !tc.moving && calls > 12 {
				t.Errorf("%d script calls for 603 revisions", calls)
			}
			if tc.moving && calls < 593 {
				t.Errorf("%d script calls for 603 revisions with a slot half moved: the keys the old master no longer holds were not set one by one", calls)
			}
			t.Logf("%d script calls", calls)

			// A gap's reset moves them even backwards, and moves every one.
			if err := rdb.Del(ctx, hash).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.HSet(ctx, hash, "f", "v").Err(); err != nil {
				t.Fatal(err)
			}
			gap := &rules.Plan{CommitLSN: pglogrepl.LSN(0x1_00000100), Gap: true}
			for _, k := range []string{key(0), key(10), ahead, hash} {
				gap.Revisions = append(gap.Revisions, rules.Revision{Key: k, Section: "s"})
			}
			if err := r.Apply(ctx, []*rules.Plan{gap}); err != nil {
				t.Fatal(err)
			}
			for k, v := range map[string]string{key(0): "1/100", key(10): "1/101", ahead: "1/100", hash: "1/100"} {
				if got, err := rdb.Get(ctx, k).Result(); got != v {
					t.Errorf("after the gap: %s = %q (%v), want %q", k, got, err, v)
				}
			}
		})
	}
}
