package sinks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// Redis replication is asynchronous: a master can acknowledge cdcd's UNLINK
// and then fail over to a replica that never received it. Before a position
// is confirmed to Postgres, cdcd writes it to a marker key on every master
// (one per slot range in a Cluster), and optionally WAITs for replicas on
// the same connection. Replication keeps a master's writes in order, so a
// node whose marker holds a position also holds every write cdcd made
// there before it. A marker found behind the position cdcd last wrote
// there, or gone, means the node serving it now lost writes cdcd had
// applied: a gap, with reason redis_lost_writes.

// Errors of Mark.
var (
	// ErrLostWrites reports a master that lost writes cdcd had applied.
	ErrLostWrites = errors.New("redis lost writes cdcd had applied")
	// ErrNotReplicated reports fewer replicas acknowledging cdcd's writes
	// than CDCD_REDIS_WAIT_REPLICAS asks for, within the timeout.
	ErrNotReplicated = errors.New("redis replicas did not acknowledge cdcd's writes")
)

// mark sets KEYS[1] to ARGV[2] unless it holds a position behind ARGV[1],
// the one this process last wrote there, or no position while one was
// written: then the node lost writes, and it returns -1.
var mark = redis.NewScript(lsnBehind + `
local cur = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and (not cur or not ahead(cur, ARGV[1])) then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`)

// markerKeys returns the marker keys of slot: one, or in a Cluster one per
// slot range, with a hash tag that places it in that range.
func (r *Redis) markerKeys(ctx context.Context, slot string) ([]string, error) {
	base := "cdcd:mark:" + slot
	cc, ok := r.client.(*redis.ClusterClient)
	if !ok {
		return []string{base}, nil
	}
	// The slot ranges change only with the topology: kept for a minute, or
	// until a write fails (see failed).
	if c := r.markKeys.Load(); c != nil && time.Since(c.at) < time.Minute && strings.HasPrefix(c.keys[0], base+":") {
		return c.keys, nil
	}
	// CLUSTER SLOTS rather than SHARDS: it is what Redis 6 has too.
	ranges, err := cc.ClusterSlots(ctx).Result() //nolint:staticcheck // see above
	if err != nil {
		return nil, fmt.Errorf("cluster slots: %w", err)
	}
	keys := make([]string, 0, len(ranges))
	for _, rg := range ranges {
		keys = append(keys, base+":{"+tagIn(rg.Start, rg.End)+"}")
	}
	if len(keys) > 0 {
		r.markKeys.Store(&markerCache{keys: keys, at: time.Now()})
	}
	return keys, nil
}

// markerCache is a Cluster's marker keys, as of at.
type markerCache struct {
	keys []string
	at   time.Time
}

// tagIn returns a short hash tag whose slot lies in [start, end].
func tagIn(start, end int) string {
	for i := 0; ; i++ {
		t := strconv.Itoa(i)
		if s := hashSlot("{" + t + "}"); s >= start && s <= end {
			return t
		}
	}
}

// masterFor returns the client of the master that serves key.
func (r *Redis) masterFor(ctx context.Context, key string) (*redis.Client, error) {
	switch c := r.client.(type) {
	case *redis.ClusterClient:
		return c.MasterForKey(ctx, key)
	case *redis.Client:
		return c, nil
	}
	return nil, fmt.Errorf("redis client %T: unknown shape", r.client)
}

// Mark records lsn, about to be confirmed for slot, on every master, after
// checking that no master lost what was marked before; with WaitReplicas,
// it also waits for that many replicas of each master. It returns
// ErrLostWrites or ErrNotReplicated (wrapped, naming the node) when the
// position must not be confirmed.
func (r *Redis) Mark(ctx context.Context, slot string, lsn pglogrepl.LSN) error {
	keys, err := r.markerKeys(ctx, slot)
	if err != nil {
		return err
	}
	type node struct {
		pipe  redis.Pipeliner
		addr  string
		marks []*redis.Cmd
		keys  []string
		wait  *redis.Cmd
	}
	nodes := map[*redis.Client]*node{}
	var order []*node
	for _, k := range keys {
		c, err := r.masterFor(ctx, k)
		if err != nil {
			return err
		}
		n := nodes[c]
		if n == nil {
			n = &node{pipe: c.Pipeline(), addr: c.Options().Addr}
			nodes[c] = n
			order = append(order, n)
		}
		n.keys = append(n.keys, k)
		n.marks = append(n.marks, mark.Eval(ctx, n.pipe, []string{k}, r.marks[k], lsn.String()))
	}
	for _, n := range order {
		if r.cfg.WaitReplicas > 0 {
			// On the connection of the writes: WAIT counts replicas that
			// have everything this connection wrote, and everything the
			// master had before it.
			n.wait = n.pipe.Do(ctx, "WAIT", r.cfg.WaitReplicas, r.cfg.WaitTimeout.Milliseconds())
		}
	}
	for _, n := range order {
		if err := exec(ctx, n.pipe); err != nil {
			r.failed(ctx)
			return fmt.Errorf("mark position on %s: %w", n.addr, err)
		}
	}
	var lost []string
	for _, n := range order {
		for i, m := range n.marks {
			if v, _ := m.Int(); v < 0 && !ignoreLostWrites {
				lost = append(lost, fmt.Sprintf("%s (marker %s, last written %s)", n.addr, n.keys[i], r.marks[n.keys[i]]))
			}
		}
	}
	if len(lost) > 0 {
		clear(r.marks)
		return fmt.Errorf("%w: the node now serving %s", ErrLostWrites, strings.Join(lost, ", "))
	}
	// The markers hold lsn now, replicated or not: a failover to a replica
	// that lacks it is lost writes, found at the next Mark.
	for _, k := range keys {
		r.marks[k] = lsn.String()
	}
	for _, n := range order {
		if n.wait == nil {
			continue
		}
		if got, _ := n.wait.Int(); got < r.cfg.WaitReplicas {
			return fmt.Errorf("%w: %d of %d replicas of %s within %s", ErrNotReplicated, got, r.cfg.WaitReplicas, n.addr, r.cfg.WaitTimeout)
		}
	}
	return nil
}

// CheckMarks reports whether a master holds a marker of slot behind
// confirmed, the position the server says cdcd confirmed last: that node
// lost writes cdcd had made before it confirmed. A missing marker is no
// loss (a Redis emptied has no stale keys). It forgets what this process
// wrote: a new session marks afresh.
func (r *Redis) CheckMarks(ctx context.Context, slot string, confirmed pglogrepl.LSN) (lost string, err error) {
	clear(r.marks)
	if ignoreLostWrites {
		return "", nil
	}
	keys, err := r.markerKeys(ctx, slot)
	if err != nil {
		return "", err
	}
	pipe := r.client.Pipeline()
	gets := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		gets[i] = pipe.Get(ctx, k)
	}
	if err := exec(ctx, pipe); err != nil {
		return "", fmt.Errorf("read markers: %w", err)
	}
	var behind []string
	for i, g := range gets {
		v, err := g.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if at, perr := pglogrepl.ParseLSN(v); perr == nil && at < confirmed {
			behind = append(behind, fmt.Sprintf("%s holds %s", keys[i], v))
		}
	}
	if len(behind) == 0 {
		return "", nil
	}
	return fmt.Sprintf("a Redis node lost writes cdcd made before it confirmed %s: %s", confirmed, strings.Join(behind, ", ")), nil
}
