package readthrough_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cdcd/cdcd/readthrough"
	"github.com/jackc/pglogrepl"
)

// A reader of a replica stores only what it read after the replica
// replayed the commit its revision names.
func TestReplicaWait(t *testing.T) {
	const commit = pglogrepl.LSN(0x5000) // the revision: start of the commit record
	for _, tc := range []struct {
		name     string
		replayed func(calls int32) pglogrepl.LSN
		primary  func(ctx context.Context) (pglogrepl.LSN, error)
		token    bool // the revision holds a reader's token, not an LSN
		stored   bool
		reason   string
	}{
		{name: "replayed past the commit", replayed: func(int32) pglogrepl.LSN { return commit + 0x30 }, stored: true},
		{name: "replayed up to the commit's start", replayed: func(int32) pglogrepl.LSN { return commit }, reason: readthrough.RefusedReplicaBehind},
		{name: "catches up while Get waits", replayed: func(n int32) pglogrepl.LSN { return commit - 0x100 + pglogrepl.LSN(n)*0x40 }, stored: true},
		{name: "stays behind", replayed: func(int32) pglogrepl.LSN { return commit - 1 }, reason: readthrough.RefusedReplicaBehind},
		{name: "token without the primary", token: true, replayed: func(int32) pglogrepl.LSN { return 1 << 40 }, reason: readthrough.RefusedReplicaUnknown},
		{name: "token, replica past the primary's position", token: true,
			replayed: func(int32) pglogrepl.LSN { return 0x9000 },
			primary:  func(context.Context) (pglogrepl.LSN, error) { return 0x9000, nil }, stored: true},
		{name: "token, replica behind the primary's position", token: true,
			replayed: func(int32) pglogrepl.LSN { return 0x8fff },
			primary:  func(context.Context) (pglogrepl.LSN, error) { return 0x9000, nil }, reason: readthrough.RefusedReplicaBehind},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb, path := setup(t)
			if !tc.token {
				rdb.Set(t.Context(), "rev:item:1", commit.String(), 0)
				rdb.Set(t.Context(), "rev:owners", "0/10", 0)
			}
			var calls atomic.Int32
			loadedAt := int32(-1)
			c, reg := newCache(t, rdb, path, readthrough.WithReplica(readthrough.Replica{
				Replayed: func(context.Context) (pglogrepl.LSN, error) { return tc.replayed(calls.Add(1)), nil },
				Primary:  tc.primary,
				Wait:     50 * time.Millisecond,
				Poll:     time.Millisecond,
			}))
			v, err := c.Get(t.Context(), "item:1", func(context.Context) ([]byte, error) {
				loadedAt = calls.Load()
				return []byte("v"), nil
			})
			if err != nil || string(v) != "v" {
				t.Fatalf("Get = %q, %v", v, err)
			}
			if _, ok := cached(t, rdb, "item:1"); ok != tc.stored {
				t.Fatalf("stored %v, want %v", ok, tc.stored)
			}
			if tc.stored && tc.replayed(loadedAt) <= commit && !tc.token {
				t.Fatalf("loaded after %d polls, before the replica replayed the commit", loadedAt)
			}
			if tc.reason != "" {
				if n := counter(t, reg, "cdcd_readthrough_fills_refused_total", "reason", tc.reason); n != 1 {
					t.Fatalf("refused for %s: %v, want 1", tc.reason, n)
				}
			}
		})
	}
}
