package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// A Redis failover to a replica that had been cut off from the replication
// stream: the new master lacks deletes cdcd had applied and confirmed. By
// default cdcd notices (its marker there is behind) and invalidates every
// section; with CDCD_REDIS_WAIT_REPLICAS it never confirms what the replica
// does not have.
func TestRedisFailoverThatLostWritesIsAGap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	replica := testenv.MustRedis(t)
	rep := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rep.Close()
	if err := rep.ReplicaOf(ctx, "127.0.0.1", fmt.Sprint(rds.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	proxy := testenv.MustProxy(t, rds.Addr)
	d := e.startDaemon(fmt.Sprintf("CDCD_REDIS_URL=redis://127.0.0.1:%d/0", proxy.Port))
	e.set("nodb:1:climate", "nodb:2:climate")
	_, end := e.write(`INSERT INTO topics (title) VALUES ('marked')`)
	e.waitConfirmed(end, 10*time.Second)
	waitFor(t, 10*time.Second, "the replica to catch up", func() bool {
		return rep.Exists(ctx, "nodb:1:climate").Val() == 1 && rep.Get(ctx, "cdcd:mark:"+e.slot).Val() != ""
	})

	// The replica is cut off; cdcd deletes a key on the master only.
	if err := rep.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	_, end = e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	e.waitConfirmed(end, 10*time.Second)
	if e.exists("nodb:1:climate") || rep.Exists(ctx, "nodb:1:climate").Val() != 1 {
		t.Fatal("setup: the key should be gone on the master and still on the cut-off replica")
	}

	// Failover: the address now leads to the replica.
	proxy.Switch(replica.Addr)
	waitFor(t, 30*time.Second, "the lost writes to be counted as a gap", func() bool {
		return d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes") >= 1
	})
	waitFor(t, 10*time.Second, "the stale key to be deleted on the new master", func() bool {
		return rep.Exists(ctx, "nodb:1:climate").Val() == 0 && rep.Exists(ctx, "nodb:2:climate").Val() == 0
	})
	d.waitReady(20 * time.Second)
}

// With CDCD_REDIS_WAIT_REPLICAS=1 and no replica acknowledging, nothing is
// confirmed: the position waits for the replica.
func TestRedisWaitReplicasHoldsConfirmation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	d := e.startDaemon("CDCD_REDIS_WAIT_REPLICAS=1", "CDCD_REDIS_WAIT_TIMEOUT=200ms")
	_, end := e.write(`INSERT INTO topics (title) VALUES ('unreplicated')`)
	time.Sleep(3 * time.Second)
	if c := e.confirmed(); c >= end {
		t.Fatalf("confirmed %s past %s although no replica acknowledged", c, end)
	}
	found := false
	for _, l := range d.log() {
		found = found || strings.Contains(l, "replicas did not acknowledge")
	}
	if !found {
		t.Error("the log does not say why the position is held")
	}

	// A replica appears and catches up: the position is confirmed.
	replica := testenv.MustRedis(t)
	rep := redis.NewClient(&redis.Options{Addr: replica.Addr})
	defer rep.Close()
	if err := rep.ReplicaOf(ctx, "127.0.0.1", fmt.Sprint(rds.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rep.ReplicaOf(context.Background(), "NO", "ONE") })
	e.waitConfirmed(end, 30*time.Second)
}
