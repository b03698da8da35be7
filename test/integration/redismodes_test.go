package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// runKeys are keys of many runs: in a Cluster they fall on every master.
func runKeys(from, to int) []string {
	var keys []string
	for i := from; i <= to; i++ {
		keys = append(keys, fmt.Sprintf("nodb:%d:climate", i))
	}
	return keys
}

func setAll(t *testing.T, c redis.UniversalClient, keys ...string) {
	t.Helper()
	ctx := context.Background()
	for _, k := range keys {
		if err := c.Set(ctx, k, "cached", 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
	}
}

func waitGone(t *testing.T, c redis.UniversalClient, what string, keys ...string) {
	t.Helper()
	waitFor(t, 20*time.Second, what, func() bool {
		for _, k := range keys {
			if c.Exists(context.Background(), k).Val() != 0 {
				return false
			}
		}
		return true
	})
}

// cdcd against a 3-master Cluster: a transaction's keys on every master go
// without CROSSSLOT, a pattern reaches every master, revisions move, a
// channel message reaches a subscriber, and a master failing over
// mid-stream leaves no stale key.
func TestRedisCluster(t *testing.T) {
	cl := testenv.MustRedisCluster(t, 3, 1)
	e := newEnv(t)
	ctx := context.Background()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	defer cc.Close()
	d := e.startDaemon("CDCD_REDIS_MODE=cluster", "CDCD_REDIS_URL="+cl.URL())

	sub := cc.Subscribe(ctx, "cdcd:invalidations")
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}

	// One transaction, keys on every master.
	keys := runKeys(1, 30)
	setAll(t, cc, append(keys, "state:summary:core")...)
	_, end := e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, 30) g;
		INSERT INTO topics (title) VALUES ('t')`)
	waitGone(t, cc, "every run's key, on every master", append(keys, "state:summary:core")...)
	e.waitConfirmed(end, 20*time.Second)
	if cc.Get(ctx, "state:summary:rev:core").Val() == "" {
		t.Error("the revision was not set")
	}
	select {
	case m := <-sub.Channel():
		t.Logf("channel message: %.120s", m.Payload)
	case <-time.After(10 * time.Second):
		t.Error("no channel message reached a subscriber")
	}

	// A pattern: every master is scanned.
	e.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`)
	keys = runKeys(100, 130)
	setAll(t, cc, keys...)
	_, end = e.write(`UPDATE climate_runs SET run_id = run_id + 1000 WHERE run_id = 1`)
	waitGone(t, cc, "the pattern's keys on every master", keys...)
	e.waitConfirmed(end, 20*time.Second)

	// A master fails over while the stream runs.
	keys = runKeys(200, 230)
	setAll(t, cc, keys...)
	if _, err := cl.KillMaster(ctx, 0); err != nil {
		t.Fatal(err)
	}
	_, end = e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(200, 230) g`)
	if err := cl.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	waitGone(t, cc, "the keys after a master failed over", keys...)
	e.waitConfirmed(end, 60*time.Second)
	if n := d.metric("cdcd_sink_errors_total", "sink=redis"); n > 0 {
		t.Logf("%v failed attempts while the master failed over (retried)", n)
	}
}

// A Sentinel failover to a replica that was cut off from the replication
// stream: by default cdcd notices the lost deletes and invalidates every
// section; with CDCD_REDIS_WAIT_REPLICAS=1 it confirmed nothing the replica
// lacked. Both end with no stale key.
func TestRedisSentinelFailoverLosingWrites(t *testing.T) {
	for _, mode := range lossModes {
		t.Run(mode.name, func(t *testing.T) {
			sg := testenv.MustRedisSentinel(t, 1, testenv.WithReplicaProxy())
			e := newEnv(t)
			ctx := context.Background()
			fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sentinelMaster(t, sg), SentinelAddrs: sentinelAddrs(sg)})
			defer fc.Close()
			d := e.startDaemon(append([]string{"CDCD_REDIS_MODE=sentinel", "CDCD_REDIS_URL=" + sg.URL()}, mode.extra...)...)
			keys := runKeys(1, 20)
			setAll(t, fc, append(keys, "state:summary:core")...)
			_, end := e.write(`INSERT INTO topics (title) VALUES ('replicated')`)
			e.waitConfirmed(end, 20*time.Second)

			replicas, err := sg.Replicas(ctx)
			if err != nil || len(replicas) == 0 {
				t.Fatalf("replicas: %v %v", replicas, err)
			}
			cut := replicas[0]
			sg.ReplicaProxy(cut).Blackhole()
			_, end = e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) SELECT g, 's', 'h' FROM generate_series(1, 20) g`)
			waitGone(t, fc, "the keys on the primary", keys...)
			if mode.extra != nil {
				time.Sleep(2 * time.Second)
				if c := e.confirmed(); c >= end {
					t.Fatalf("confirmed %s past %s while the only replica lacked it", c, end)
				}
			} else {
				e.waitConfirmed(end, 20*time.Second)
			}

			if err := sg.Failover(ctx, cut); err != nil {
				t.Fatal(err)
			}
			// The new primary came back with the deleted keys; cdcd must
			// delete them again.
			waitGone(t, fc, "no stale key after the failover", keys...)
			e.waitConfirmed(end, 60*time.Second)
			t.Logf("gaps: %v", d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes"))
		})
	}
}

// lossModes are the two ways cdcd meets a Redis failover that lost
// writes: by default its markers find the loss; with WAIT it confirms
// nothing a replica lacks.
var lossModes = []struct {
	name  string
	extra []string
}{
	{"default", nil},
	{"wait", []string{"CDCD_REDIS_WAIT_REPLICAS=1", "CDCD_REDIS_WAIT_TIMEOUT=200ms"}},
}

func sentinelAddrs(sg *testenv.RedisSentinel) []string {
	var out []string
	for _, s := range sg.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

func sentinelMaster(t *testing.T, sg *testenv.RedisSentinel) string {
	t.Helper()
	opt, err := redis.ParseFailoverURL(sg.URL())
	if err != nil {
		t.Fatal(err)
	}
	return opt.MasterName
}
