package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// consRedis is the Redis a consistency run goes through, readers and cdcd
// alike, and the Redis fault it injects.
type consRedis struct {
	rdb redis.UniversalClient
	env []string // cdcd's CDCD_REDIS_* variables
	// fault injects the n-th Redis fault (from 0) while h runs, logs what
	// it did and returns its kind.
	fault func(t *testing.T, h *harness, n int) string
}

// standaloneRedis is the shared server, restarted empty as its fault.
func standaloneRedis(e *env) *consRedis {
	return &consRedis{rdb: e.rdb, fault: func(t *testing.T, _ *harness, _ int) string {
		t.Helper()
		if err := rds.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: Redis restarted empty", now())
		return "Redis restarted empty"
	}}
}

// now is the time of day, for a fault's log line.
func now() string { return time.Now().Format("15:04:05.000") }

// consSentinelRedis is a primary with two replicas, each replicating through a
// proxy, and three sentinels. Readers and cdcd find the primary through
// the sentinels. Its faults are failovers: the first to a replica cut off
// the replication stream for a while (the failover loses acknowledged
// writes: deletes, revision moves, fills and cdcd's marker), then, in turn,
// a failover on request to a replica in sync (the old primary takes writes
// until the sentinels demote it, and drops them) and a crash of the
// primary, restarted empty as a replica once another was promoted.
func consSentinelRedis(t *testing.T) *consRedis {
	t.Helper()
	sg := testenv.MustRedisSentinel(t, 2, testenv.WithReplicaProxy())
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sentinelMaster(t, sg), SentinelAddrs: sentinelAddrs(sg)})
	t.Cleanup(func() { fc.Close() })
	return &consRedis{
		rdb: fc,
		env: []string{"CDCD_REDIS_MODE=sentinel", "CDCD_REDIS_URL=" + sg.URL()},
		fault: func(t *testing.T, h *harness, n int) string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			switch {
			case n == 0:
				return lossyFailover(ctx, t, h, sg)
			case n%2 == 1:
				return requestedFailover(ctx, t, sg)
			default:
				return primaryCrash(ctx, t, sg)
			}
		},
	}
}

// lossyFailover cuts a replica off the replication stream, lets the load
// run on the primary for 2 s (several of cdcd's markers), fails over to
// the replica and waits until cdcd has noticed the lost writes and
// invalidated everything (a gap, reason redis_lost_writes).
func lossyFailover(ctx context.Context, t *testing.T, h *harness, sg *testenv.RedisSentinel) string {
	t.Helper()
	replicas, err := sg.Replicas(ctx)
	if err != nil || len(replicas) == 0 {
		t.Fatalf("replicas: %v %v", replicas, err)
	}
	cut := replicas[0]
	gaps := h.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes")
	sg.ReplicaProxy(cut).Blackhole()
	time.Sleep(2 * time.Second)
	if err := sg.Failover(ctx, cut); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "cdcd to notice the writes the failover lost", func() bool {
		return h.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes") > gaps
	})
	t.Logf("%s: failed over to %s, cut off the replication stream 2 s before; cdcd noticed", now(), cut.Addr)
	return "Redis failover losing writes"
}

// requestedFailover promotes a replica in sync (SENTINEL FAILOVER).
func requestedFailover(ctx context.Context, t *testing.T, sg *testenv.RedisSentinel) string {
	t.Helper()
	replicas, err := sg.Replicas(ctx)
	if err != nil || len(replicas) == 0 {
		t.Fatalf("replicas: %v %v", replicas, err)
	}
	if err := sg.Failover(ctx, replicas[0]); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: failed over on request to %s", now(), replicas[0].Addr)
	return "Redis failover on request"
}

// primaryCrash kills the primary (SIGKILL), waits for the sentinels to
// promote a replica, and restarts the old primary empty; it returns once
// that one is a replica of the new primary, in sync.
func primaryCrash(ctx context.Context, t *testing.T, sg *testenv.RedisSentinel) string {
	t.Helper()
	old, err := sg.KillPrimary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	primary, err := sg.WaitFailover(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	if err := sg.Restart(ctx, old); err != nil {
		t.Fatal(err)
	}
	want := []string{"role:slave", "master_link_status:up", fmt.Sprintf("master_port:%d", primary.Port)}
	waitFor(t, time.Minute, old.Addr+" to replicate from "+primary.Addr, func() bool {
		info, err := old.Do(ctx, "INFO", "replication")
		if err != nil {
			return false
		}
		lines := strings.Fields(info)
		for _, w := range want {
			if !slices.Contains(lines, w) {
				return false
			}
		}
		return true
	})
	t.Logf("%s: primary %s crashed, %s promoted, %s back as its replica", now(), old.Addr, primary.Addr, old.Addr)
	return "Redis primary crashed"
}
