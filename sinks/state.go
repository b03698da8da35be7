package sinks

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// The Redis sink also remembers, per slot, the server it streamed from and
// the last position cdcd confirmed, so that a restart can tell its own
// progress from a gap it cannot account for. It lives next to the caches it
// protects: a Redis that lost it also lost the keys that could be stale.

func stateKey(slot string) string { return "cdcd:slot:" + slot }

// State is what cdcd recorded about a slot.
type State struct {
	SystemID  string
	Confirmed pglogrepl.LSN
}

// LoadState returns the recorded state of slot; ok is false when there is
// none.
func (r *Redis) LoadState(ctx context.Context, slot string) (st State, ok bool, err error) {
	m, err := r.client.HGetAll(ctx, stateKey(slot)).Result()
	if err != nil {
		return State{}, false, err
	}
	if len(m) == 0 {
		return State{}, false, nil
	}
	lsn, err := pglogrepl.ParseLSN(m["confirmed"])
	if err != nil {
		return State{}, false, fmt.Errorf("recorded state of slot %s: %w", slot, err)
	}
	return State{SystemID: m["system_id"], Confirmed: lsn}, true, nil
}

// ResetState records st as is.
func (r *Redis) ResetState(ctx context.Context, slot string, st State) error {
	return r.client.HSet(ctx, stateKey(slot), "system_id", st.SystemID, "confirmed", st.Confirmed.String()).Err()
}

// advanceState moves the recorded position forward (never back).
var advanceState = redis.NewScript(lsnBehind + `
if ahead(redis.call('HGET', KEYS[1], 'confirmed'), ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'confirmed', ARGV[1])
return 1
`)

// AdvanceState records that lsn is about to be confirmed.
func (r *Redis) AdvanceState(ctx context.Context, slot string, lsn pglogrepl.LSN) error {
	err := advanceState.Run(ctx, r.client, []string{stateKey(slot)}, lsn.String()).Err()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}
