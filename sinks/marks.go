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
// and then fail over to a replica that never received it. Replication keeps
// a master's writes in order, so a node that holds one of cdcd's writes
// holds every write acknowledged there before it. Two keys per master (one
// pair per slot range in a Cluster, sharing a hash tag) tell a node that
// lost writes:
//
//   - a counter, cdcd:seq:SLOT, incremented at the end of every batch and
//     every pattern job, on every master, after their deletes. The sink
//     remembers the highest value an increment returned on each; a node
//     whose counter is below it lost that increment, and the deletes before
//     it. Every increment checks that first: later increments on a node
//     that lost some would soon hide the loss.
//   - a marker, cdcd:mark:SLOT, set to a position before it is confirmed to
//     Postgres (Secure), which first checks every counter; optionally
//     followed by WAIT for replicas on the same connection. The next process
//     compares the markers with the position the server resumes at (Lost).
//
// A marker found behind what cdcd wrote, or gone, means the node serving it
// now lost writes cdcd had applied before positions it confirmed: a gap,
// with reason redis_lost_writes. A counter behind while its marker is
// intact means the node lost only writes made since the last marker, for
// positions not yet confirmed: the session starts again from the confirmed
// position and the server sends those transactions again. Without the
// counter, a failover losing only those writes would pass the marker check
// and be confirmed.

// Errors of Secure.
var (
	// ErrLostWrites reports a master that lost writes cdcd had applied.
	ErrLostWrites = errors.New("redis lost writes cdcd had applied")
	// ErrLostUnconfirmed reports a master that lost writes cdcd made after
	// the last position it confirmed, and only those: applying the
	// transactions after that position again repairs it.
	ErrLostUnconfirmed = errors.New("redis lost writes cdcd made after the last confirmed position")
	// ErrNotReplicated reports fewer replicas acknowledging cdcd's writes
	// than CDCD_REDIS_WAIT_REPLICAS asks for, within the timeout.
	ErrNotReplicated = errors.New("redis replicas did not acknowledge cdcd's writes")
)

// mark sets marker KEYS[1] to ARGV[2] unless the node lost writes. It
// returns -1 when the marker holds a position behind ARGV[1], the one this
// process last wrote there, or none while one was written; -2 when only
// counter KEYS[2] is below ARGV[3], the highest value an increment
// returned.
var mark = redis.NewScript(lsnBehind + `
local cur = redis.call('GET', KEYS[1])
if ARGV[1] ~= '' and (not cur or not ahead(cur, ARGV[1])) then return -1 end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then return -2 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
`)

// seqKey is the write counter that shares marker key's hash slot.
func seqKey(marker string) string { return "cdcd:seq:" + strings.TrimPrefix(marker, "cdcd:mark:") }

// count increments write counter KEYS[1] and returns its new value, or -1
// when it held less than ARGV[1], the highest value an increment returned
// before this one was sent: the node lost writes.
var count = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local v = redis.call('INCR', KEYS[1])
if cur < tonumber(ARGV[1]) then return -1 end
return v
`)

// queueCount queues an increment of every master's write counter on pipe,
// after the writes queued before it; counted records what they returned.
func (r *Redis) queueCount(ctx context.Context, pipe redis.Pipeliner) (counted func(), err error) {
	keys, err := r.markerKeys(ctx)
	if err != nil {
		return nil, err
	}
	cmds := make([]*redis.Cmd, len(keys))
	for i, k := range keys {
		cmds[i] = count.Eval(ctx, pipe, []string{seqKey(k)}, r.counted(k))
	}
	return func() {
		r.seqMu.Lock()
		defer r.seqMu.Unlock()
		for i, c := range cmds {
			// Also after a failed pipeline: what a master acknowledged
			// may be lost with it.
			v, err := c.Int64()
			switch {
			case err != nil:
			case v < 0:
				r.seqLost = append(r.seqLost, keys[i])
			case v > r.seq[keys[i]]:
				r.seq[keys[i]] = v
			}
		}
	}, nil
}

// counted returns the highest value an increment of marker's counter
// returned.
func (r *Redis) counted(marker string) int64 {
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	return r.seq[marker]
}

// markerKeys returns the marker keys of slot: one, or in a Cluster one per
// slot range, with a hash tag that places it in that range.
func (r *Redis) markerKeys(ctx context.Context) ([]string, error) {
	base := "cdcd:mark:" + r.cfg.Slot
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

// forget forgets the markers and counts this process wrote: a new session
// starts from what the nodes hold.
func (r *Redis) forget() {
	clear(r.marks)
	r.seqMu.Lock()
	clear(r.seq)
	r.seqLost = nil
	r.seqMu.Unlock()
}

// countLost returns the marker keys whose counter an increment found
// behind, since the last call.
func (r *Redis) countLost() []string {
	r.seqMu.Lock()
	defer r.seqMu.Unlock()
	lost := r.seqLost
	r.seqLost = nil
	return lost
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

// Secure records lsn, about to be confirmed, on every master, after
// checking that no master lost what was marked before; with WaitReplicas,
// it also waits for that many replicas of each master. It returns
// ErrLostWrites or ErrNotReplicated (wrapped, naming the node) when the
// position must not be confirmed.
func (r *Redis) Secure(ctx context.Context, lsn pglogrepl.LSN) error {
	keys, err := r.markerKeys(ctx)
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
		n.marks = append(n.marks, mark.Eval(ctx, n.pipe, []string{k, seqKey(k)}, r.marks[k], lsn.String(), r.counted(k)))
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
	var lost, unconfirmed []string
	for _, k := range r.countLost() {
		if ignoreLostWrites {
			break
		}
		unconfirmed = append(unconfirmed, fmt.Sprintf("write counter %s (found behind by a batch)", seqKey(k)))
	}
	for _, n := range order {
		for i, m := range n.marks {
			k := n.keys[i]
			if ignoreLostWrites {
				continue
			}
			switch v, _ := m.Int(); v {
			case -1:
				lost = append(lost, fmt.Sprintf("%s (marker %s, last written %s)", n.addr, k, r.marks[k]))
			case -2:
				unconfirmed = append(unconfirmed, fmt.Sprintf("%s (write counter %s, last counted %d)", n.addr, seqKey(k), r.counted(k)))
			}
		}
	}
	if len(lost) > 0 {
		r.forget()
		return fmt.Errorf("%w: the node now serving %s", ErrLostWrites, strings.Join(lost, ", "))
	}
	if len(unconfirmed) > 0 {
		r.forget()
		return fmt.Errorf("%w: the node now serving %s", ErrLostUnconfirmed, strings.Join(unconfirmed, ", "))
	}
	for _, n := range order {
		if n.wait == nil {
			continue
		}
		if got, _ := n.wait.Int(); got < r.cfg.WaitReplicas {
			// lsn is not confirmed: a failover that loses this marker
			// loses nothing confirmed, and the counters catch the rest.
			return fmt.Errorf("%w: %d of %d replicas of %s within %s", ErrNotReplicated, got, r.cfg.WaitReplicas, n.addr, r.cfg.WaitTimeout)
		}
	}
	// lsn is about to be confirmed: a node whose marker is behind it
	// from now on lost confirmed writes.
	for _, k := range keys {
		r.marks[k] = lsn.String()
	}
	return nil
}

// Lost reports whether a master holds a marker behind confirmed, the
// position the server says cdcd confirmed last: that node lost writes cdcd
// had made before it confirmed. A missing marker is no loss (a Redis
// emptied has no stale keys). It forgets what this process wrote: a new
// session marks afresh.
func (r *Redis) Lost(ctx context.Context, confirmed pglogrepl.LSN) (lost string, err error) {
	r.forget()
	if ignoreLostWrites {
		return "", nil
	}
	keys, err := r.markerKeys(ctx)
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
