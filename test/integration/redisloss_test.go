package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// A Redis failover to a replica that had been cut off from the replication
// stream: the new master lacks deletes cdcd had applied and confirmed. By
// default cdcd notices (its marker there is behind) and invalidates every
// section; with CDCD_REDIS_WAIT_REPLICAS it never confirms what the replica
// does not have.
func TestRedisFailoverThatLostWritesIsAGap(t *testing.T) {
	s := newLossSetup(t)
	ctx := context.Background()
	end := s.cutOffAndDelete(t)
	s.e.waitConfirmed(end, 10*time.Second)

	// Failover: the address now leads to the replica. Nothing is written
	// any more, so no new position prompts a check: cdcd checks the
	// positions it confirmed every second (the feedback delay) too. Without
	// that only PostgreSQL's own WAL (a standby snapshot every 15 s) would.
	s.proxy.Switch(s.replica.Addr)
	waitFor(t, 8*time.Second, "the lost writes to be counted as a gap on an idle stream", func() bool {
		return s.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes") >= 1
	})
	waitFor(t, 10*time.Second, "the stale key to be deleted on the new master", func() bool {
		return s.rep.Exists(ctx, "nodb:1:climate").Val() == 0 && s.rep.Exists(ctx, "nodb:2:climate").Val() == 0
	})
	s.d.waitReady(20 * time.Second)
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

// Securing a position — markers, and WAIT for a replica that never answers
// — must not stop invalidation: it runs beside the stream. With it in the
// receive loop, each attempt held the stream for the whole WAIT timeout,
// about once a second.
func TestRedisWaitReplicasDoesNotStallInvalidation(t *testing.T) {
	e := newEnv(t)
	e.startDaemon("CDCD_REDIS_WAIT_REPLICAS=1", "CDCD_REDIS_WAIT_TIMEOUT=2s")
	var worst time.Duration
	for i := range 40 {
		key := fmt.Sprintf("nodb:%d:climate", 7000+i)
		e.set(key)
		start := time.Now()
		e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES ($1, 's', 'h')`, 7000+i)
		waitFor(t, 10*time.Second, key+" deleted", func() bool { return !e.exists(key) })
		worst = max(worst, time.Since(start))
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("slowest of 40 invalidations over about 5s, while every confirmation waited 2s for a replica: %s", worst)
	if worst > time.Second {
		t.Errorf("an invalidation took %s: securing positions held the stream", worst)
	}
}

// lossSetup is a Redis master (the shared server) with a replica, cdcd
// reaching the master through a proxy: a failover is a switch of the proxy.
type lossSetup struct {
	e       *env
	d       *daemon
	replica *testenv.Redis
	rep     *redis.Client
	proxy   *testenv.Proxy
}

func newLossSetup(t *testing.T, extra ...string) *lossSetup {
	t.Helper()
	e := newEnv(t)
	s := &lossSetup{e: e, replica: testenv.MustRedis(t)}
	s.rep = redis.NewClient(&redis.Options{Addr: s.replica.Addr})
	t.Cleanup(func() { s.rep.Close() })
	if err := s.rep.ReplicaOf(context.Background(), "127.0.0.1", fmt.Sprint(rds.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	s.proxy = testenv.MustProxy(t, rds.Addr)
	s.d = e.startDaemon(append(extra, fmt.Sprintf("CDCD_REDIS_URL=redis://127.0.0.1:%d/0", s.proxy.Port))...)
	e.set("nodb:1:climate", "nodb:2:climate")
	_, end := e.write(`INSERT INTO topics (title) VALUES ('marked')`)
	e.waitConfirmed(end, 20*time.Second)
	waitFor(t, 10*time.Second, "the replica to catch up", func() bool {
		m := s.rep.Get(context.Background(), "cdcd:mark:"+e.slot).Val()
		return m != "" && m == e.rdb.Get(context.Background(), "cdcd:mark:"+e.slot).Val() &&
			s.rep.Exists(context.Background(), "nodb:1:climate").Val() == 1
	})
	return s
}

// cutOffAndDelete cuts the replica off and has cdcd delete a key on the
// master only; it returns the commit's end.
func (s *lossSetup) cutOffAndDelete(t *testing.T) pglogrepl.LSN {
	t.Helper()
	if err := s.rep.ReplicaOf(context.Background(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	_, end := s.e.write(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 's', 'h')`)
	waitFor(t, 10*time.Second, "the delete on the master", func() bool { return !s.e.exists("nodb:1:climate") })
	if s.rep.Exists(context.Background(), "nodb:1:climate").Val() != 1 {
		t.Fatal("setup: the key should still be on the cut-off replica")
	}
	return end
}

// A failover that loses only the deletes made since cdcd's last marker —
// the replica holds the marker, not the deletes — must not go unnoticed:
// the write counter beside the marker is behind. With
// CDCD_REDIS_WAIT_REPLICAS nothing after the marker was confirmed, so
// cdcd starts the session again from the confirmed position and applies
// those transactions again, without invalidating everything.
func TestRedisFailoverLosingUnconfirmedDeletes(t *testing.T) {
	s := newLossSetup(t, "CDCD_REDIS_WAIT_REPLICAS=1", "CDCD_REDIS_WAIT_TIMEOUT=200ms")
	ctx := context.Background()
	end := s.cutOffAndDelete(t)
	time.Sleep(time.Second) // cdcd marks the position on the master, and WAITs in vain
	s.proxy.Switch(s.replica.Addr)
	waitFor(t, 30*time.Second, "the lost delete to be applied again on the new master", func() bool {
		return s.rep.Exists(ctx, "nodb:1:climate").Val() == 0
	})
	if n := s.d.metric("cdcd_gap_invalidations_total", "reason=redis_lost_writes"); n != 0 {
		t.Errorf("%v gaps: nothing confirmed was lost, the transactions after the confirmed position suffice", n)
	}
	if s.rep.Exists(ctx, "nodb:2:climate").Val() != 1 {
		t.Error("nodb:2:climate was invalidated too: a full invalidation where a replay suffices")
	}
	found := false
	for _, l := range s.d.log() {
		found = found || strings.Contains(l, "restarting the session to apply them again")
	}
	if !found {
		t.Error("the log does not say why the session restarted")
	}
	// The old master comes back as the new one's replica: confirmed.
	if err := s.e.rdb.ReplicaOf(ctx, "127.0.0.1", fmt.Sprint(s.replica.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.e.rdb.ReplicaOf(context.Background(), "NO", "ONE") })
	s.e.waitConfirmed(end, 30*time.Second)
}

// The same loss with default settings: whether cdcd marked the position
// before the failover (a gap) or not (a replay), the delete is not lost.
func TestRedisFailoverLosingDeletesAfterTheMarker(t *testing.T) {
	s := newLossSetup(t)
	ctx := context.Background()
	end := s.cutOffAndDelete(t)
	s.proxy.Switch(s.replica.Addr)
	s.e.waitConfirmed(end, 30*time.Second)
	waitFor(t, 10*time.Second, "the lost delete to be applied again on the new master", func() bool {
		return s.rep.Exists(ctx, "nodb:1:climate").Val() == 0
	})
}
