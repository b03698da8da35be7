package sinks

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// cdcd remembers, per slot, the server it streamed from and the last
// position it confirmed, so that a restart can tell its own progress from a
// gap it cannot account for: a StateStore. RedisState keeps it next to the
// caches it protects: a Redis that lost it also lost the keys that could be
// stale.
//
// Two keys per slot:
//   - cdcd:slot:SLOT, a hash: system_id, timeline, confirmed (pg_lsn text);
//   - cdcd:slot:SLOT:marker, set once and never changed: its presence tells
//     a state that went missing (deleted, evicted: a gap) from a Redis that
//     was emptied (FLUSHALL, a restart without persistence: nothing cached
//     predates it, so nothing can be stale).
//
// Only the instance that holds the slot writes them, and every write is a
// compare-and-set on what that instance read, so a second instance racing
// it is refused instead of overwriting its state.

func stateKey(slot string) string  { return "cdcd:slot:" + slot }
func markerKey(slot string) string { return "cdcd:slot:" + slot + ":marker" }

// ErrStateChanged reports that the recorded state is not what this
// instance read or wrote last: another instance writes it.
var ErrStateChanged = errors.New("the recorded state of the slot was changed by another writer")

// State is what cdcd recorded about a slot.
type State struct {
	SystemID  string
	Timeline  int32
	Confirmed pglogrepl.LSN
}

// Recorded is a slot's state as read from its store.
type Recorded struct {
	State
	// Known: the state exists.
	Known bool
	// Marked: the marker exists, so Redis was not emptied since cdcd first
	// recorded a state for the slot.
	Marked bool
}

// A StateStore keeps what cdcd recorded about one slot. Every write is a
// compare-and-set: ErrStateChanged when another instance wrote it.
type StateStore interface {
	// Load returns the recorded state.
	Load(ctx context.Context) (Recorded, error)
	// Reset records st for a new session if the recorded state is still
	// prev, as Load returned it.
	Reset(ctx context.Context, prev Recorded, st State) error
	// Advance records that lsn, sent by the server st names, is about to be
	// confirmed; the recorded position never moves back.
	Advance(ctx context.Context, st State, lsn pglogrepl.LSN) error
}

var _ StateStore = (*RedisState)(nil)

// RedisState is the StateStore of a slot in Redis, in keys of its own.
type RedisState struct {
	client redis.UniversalClient
	slot   string
}

// State returns the state store of slot in the Redis the sink writes to,
// on the sink's connections.
func (r *Redis) State(slot string) *RedisState { return &RedisState{client: r.client, slot: slot} }

// Load returns the recorded state of the slot.
func (s *RedisState) Load(ctx context.Context) (Recorded, error) {
	slot := s.slot
	pipe := s.client.Pipeline()
	all := pipe.HGetAll(ctx, stateKey(slot))
	marked := pipe.Exists(ctx, markerKey(slot))
	if _, err := pipe.Exec(ctx); err != nil {
		return Recorded{}, err
	}
	rec := Recorded{Marked: marked.Val() == 1}
	m := all.Val()
	if len(m) == 0 {
		return rec, nil
	}
	lsn, err := pglogrepl.ParseLSN(m["confirmed"])
	if err != nil {
		return Recorded{}, fmt.Errorf("recorded state of slot %s: confirmed %q: %w", slot, m["confirmed"], err)
	}
	tl, _ := strconv.Atoi(m["timeline"]) // absent before timelines were recorded: 0
	rec.State = State{SystemID: m["system_id"], Timeline: int32(tl), Confirmed: lsn}
	rec.Known = true
	return rec, nil
}

// resetState replaces the state in KEYS[1] with ARGV[4..6] if it still is
// ARGV[1..3] (system_id, timeline, confirmed; all empty: no state). The
// marker is set apart: in a Cluster it may live in another slot.
var resetState = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'system_id', 'timeline', 'confirmed')
for i = 1, 3 do
  if (cur[i] or '') ~= ARGV[i] then return 0 end
end
redis.call('HSET', KEYS[1], 'system_id', ARGV[4], 'timeline', ARGV[5], 'confirmed', ARGV[6])
return 1
`)

// Reset records st for a new session if the recorded state is still prev
// (as Load returned it); otherwise it returns ErrStateChanged.
func (s *RedisState) Reset(ctx context.Context, prev Recorded, st State) error {
	exp := []any{"", "", ""}
	if prev.Known {
		exp = []any{prev.SystemID, timelineText(prev.Timeline), prev.Confirmed.String()}
	}
	args := append(exp, st.SystemID, timelineText(st.Timeline), st.Confirmed.String())
	n, err := resetState.Run(ctx, s.client, []string{stateKey(s.slot)}, args...).Int()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrStateChanged
	}
	// After the state: a crash in between leaves a state without a marker,
	// which the next start reads as known.
	return s.client.Set(ctx, markerKey(s.slot), "1", 0).Err()
}

// timelineText is how a timeline is stored; 0 (unknown) as empty, as a
// state recorded before timelines were reads back.
func timelineText(tl int32) string {
	if tl == 0 {
		return ""
	}
	return strconv.Itoa(int(tl))
}

// advanceState moves the recorded position forward (never back), only while
// the state is that of this session's server.
var advanceState = redis.NewScript(lsnBehind + `
local cur = redis.call('HMGET', KEYS[1], 'system_id', 'timeline')
if (cur[1] or '') ~= ARGV[2] or (cur[2] or '') ~= ARGV[3] then return -1 end
if ahead(redis.call('HGET', KEYS[1], 'confirmed'), ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'confirmed', ARGV[1])
return 1
`)

// Advance records that lsn, sent by the server st names, is about to be
// confirmed. It returns ErrStateChanged when the recorded state is another
// server's.
func (s *RedisState) Advance(ctx context.Context, st State, lsn pglogrepl.LSN) error {
	n, err := advanceState.Run(ctx, s.client, []string{stateKey(s.slot)}, lsn.String(), st.SystemID, timelineText(st.Timeline)).Int()
	if err != nil {
		return err
	}
	if n < 0 {
		return ErrStateChanged
	}
	return nil
}

// EvictionPolicy returns the server's maxmemory-policy.
func (r *Redis) EvictionPolicy(ctx context.Context) (string, error) {
	m, err := r.client.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", err
	}
	p, ok := m["maxmemory-policy"]
	if !ok {
		return "", errors.New("maxmemory-policy not reported")
	}
	return p, nil
}
