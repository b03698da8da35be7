package integration

import (
	"context"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// The fault suite over the Redis shapes production runs: a Cluster whose
// masters are killed mid-load, and a Sentinel group failing over to a
// replica cut off from the replication stream. Each round's fault loses
// writes Redis had acknowledged to cdcd; the round's check reads the keys
// where they are served after the failover. CDCD_CHAOS_REDIS_ROUNDS sets
// the number of rounds of each (make chaos runs more).

// clusterRedis is a Cluster of 3 masters with a replica each.
func clusterRedis(t *testing.T) *chaosRedis {
	cl := testenv.MustRedisCluster(t, 3, 1)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { cc.Close() })
	return &chaosRedis{mode: "cluster", url: cl.URL(), client: cc, cluster: cl}
}

// sentinelRedis is a Sentinel group whose one replica replicates through
// a proxy that can cut it off. A failover takes replication off the proxy,
// so a round that fails over spends the group: the next starts another.
func sentinelRedis(t *testing.T) *chaosRedis {
	sg := testenv.MustRedisSentinel(t, 1, testenv.WithReplicaProxy())
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: sg.MasterName, SentinelAddrs: sentinelAddrs(sg)})
	t.Cleanup(func() { fc.Close() })
	return &chaosRedis{mode: "sentinel", url: sg.URL(), client: fc, sentinel: sg,
		renew: func() *chaosRedis { return sentinelRedis(t) },
		stop: func() {
			if err := sg.Stop(); err != nil {
				t.Logf("stop the spent sentinel group: %v", err)
			}
		}}
}

// clusterMasterKilled: a master crashes mid-load, its replica takes over,
// and the crashed node comes back as a replica. The masters take turns.
var clusterMasterKilled = fault{"cluster master killed", func(t *testing.T, c *chaos) {
	killClusterMaster(t, c, 0)
}}

// clusterMasterKilledLagging: the same, with the replica surely lacking
// the master's last writes — it is frozen and its link dropped for lag
// before the crash, so what the master wrote meanwhile never reaches it.
var clusterMasterKilledLagging = fault{"cluster master killed, replica lagging", func(t *testing.T, c *chaos) {
	killClusterMaster(t, c, 300*time.Millisecond)
}}

func killClusterMaster(t *testing.T, c *chaos, lag time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cl := c.redis.cluster
	// The replicas hold the round's keys: what the failover loses are
	// deletes.
	if err := cl.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	shards, err := cl.Shards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := c.round % len(shards)
	if lag > 0 {
		for _, r := range shards[i].Replicas {
			if err := r.Pause(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := shards[i].Master.Do(ctx, "CLIENT", "KILL", "TYPE", "replica"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lag)
	}
	// Killed as found above: asking the cluster again could reach a
	// paused replica.
	m := shards[i].Master
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if lag > 0 {
		for _, r := range shards[i].Replicas {
			if err := r.Resume(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cl.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.Restart(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// sentinelFaults fail the primary over to its replica after cutting the
// replica off the replication stream: it lacks the deletes cdcd made
// meanwhile, on the primary only.
var sentinelFaults = []fault{
	{"sentinel failover to a cut-off replica", func(t *testing.T, c *chaos) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sg := c.redis.sentinel
		if err := sg.Failover(ctx, cutOffReplica(t, c)); err != nil {
			t.Fatal(err)
		}
		c.redis.spent = true
	}},
	{"sentinel primary killed, cut-off promoted", func(t *testing.T, c *chaos) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		sg := c.redis.sentinel
		cutOffReplica(t, c)
		old, err := sg.KillPrimary(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sg.WaitFailover(ctx, old); err != nil {
			t.Fatal(err)
		}
		// Back empty, it becomes the new primary's replica.
		if err := sg.Restart(ctx, old); err != nil {
			t.Fatal(err)
		}
		c.redis.spent = true
	}},
}

// cutOffReplica waits until the replica holds everything the primary has
// (the round's keys), blackholes its replication stream and lets the load
// run on for a while; it returns the replica.
func cutOffReplica(t *testing.T, c *chaos) *testenv.Redis {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sg := c.redis.sentinel
	if err := sg.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	replicas, err := sg.Replicas(ctx)
	if err != nil || len(replicas) == 0 {
		t.Fatalf("replicas: %v %v", replicas, err)
	}
	r := replicas[0]
	sg.ReplicaProxy(r).Blackhole()
	time.Sleep(1500 * time.Millisecond)
	return r
}

// runRedisChaos runs rounds (CDCD_CHAOS_REDIS_ROUNDS, else def) of faults
// over r, cdcd started with extra, and fails t on any stale key.
func runRedisChaos(t *testing.T, r *chaosRedis, faults []fault, def int, extra ...string) {
	t.Helper()
	c := newChaosOver(t, r, extra...)
	rounds := roundsFrom(t, "CDCD_CHAOS_REDIS_ROUNDS", def)
	if stale := runChaos(t, c, faults, rounds); stale > 0 {
		t.Errorf("%d stale keys over %d rounds", stale, rounds)
	}
}

func TestFaultSuiteRedisCluster(t *testing.T) {
	runRedisChaos(t, clusterRedis(t), []fault{clusterMasterKilled}, 3)
}

// A master that crashes with deletes cdcd made after its last marker
// unreplicated: the promoted replica holds the marker cdcd last wrote, and
// only the write counter beside it shows the loss. With the defaults the
// marker of a position confirmed meanwhile is behind too (a gap); with
// CDCD_REDIS_WAIT_REPLICAS=1 nothing lost was confirmed, and the session
// applies the transactions after the confirmed position again.
func TestFaultSuiteRedisClusterLaggingReplica(t *testing.T) {
	for _, mode := range lossModes {
		t.Run(mode.name, func(t *testing.T) {
			runRedisChaos(t, clusterRedis(t), []fault{clusterMasterKilledLagging}, 3, mode.extra...)
		})
	}
}

// Sentinel failovers that lose writes, with cdcd's defaults (its markers
// find the loss: a gap, reason redis_lost_writes) and with
// CDCD_REDIS_WAIT_REPLICAS=1 (nothing the replica lacks is confirmed).
func TestFaultSuiteRedisSentinel(t *testing.T) {
	for _, mode := range lossModes {
		t.Run(mode.name, func(t *testing.T) {
			runRedisChaos(t, sentinelRedis(t), sentinelFaults, len(sentinelFaults), mode.extra...)
		})
	}
}

// The Sentinel rounds catch a daemon that does not check its markers: the
// failover's lost deletes stay lost.
func TestFaultSuiteRedisSentinelCatchesIgnoredMarkers(t *testing.T) {
	useBrokenBuild(t, "cdcd_nomarkcheck")
	c := newChaosOver(t, sentinelRedis(t))
	if stale := runChaos(t, c, sentinelFaults[:1], 1); stale == 0 {
		t.Fatal("the checker found no stale key in a daemon that ignores its markers")
	}
}
