package sinks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
	"github.com/redis/go-redis/v9"
)

// Revisions are set by Lua scripts, which compare before they write. One
// script call costs Redis several times what each key in it does, so a
// batch's revisions go in calls of up to UnlinkBatch keys each, as ARGV:
// in a Cluster one call covers the keys of many hash slots on one master,
// which Redis refuses for declared keys (CROSSSLOT) and allows for keys a
// script without flags reaches itself, as long as that master serves them.
// A key it does not serve (a slot half moved, a stale slot map) fails the
// call there, and the revisions are then set one key per call, through the
// client's routing, which follows MOVED and ASK (setRevisionsByMaster).

// lsnBehind is a Lua function: whether pg_lsn text cur is at or past new.
// A value that is not an LSN is never ahead, so it is overwritten.
const lsnBehind = `
local function ahead(cur, new)
  if not cur then return false end
  local ch, cl = string.match(cur, '^(%x+)/(%x+)$')
  local nh, nl = string.match(new, '^(%x+)/(%x+)$')
  if not (ch and nh) then return false end
  ch, cl, nh, nl = tonumber(ch, 16), tonumber(cl, 16), tonumber(nh, 16), tonumber(nl, 16)
  return ch > nh or (ch == nh and cl >= nl)
end
`

// setRevision sets KEYS[1] to ARGV[1], a pg_lsn text, unless it already
// holds a later LSN: a transaction re-sent after a restart must not move a
// revision backwards. A key of another type is overwritten.
var setRevision = redis.NewScript(lsnBehind + `
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and ahead(cur, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
`)

// setRevisions is setRevision for many keys: ARGV holds pairs of a key and
// its pg_lsn text. A key it cannot set does not stop it: it returns, for
// each, the key's place among the pairs (from 1) and the error.
var setRevisions = redis.NewScript(lsnBehind + `
local failed = {}
for i = 1, #ARGV, 2 do
  local ok, cur = pcall(redis.call, 'GET', ARGV[i])
  if not (ok and ahead(cur, ARGV[i+1])) then
    local r = redis.pcall('SET', ARGV[i], ARGV[i+1])
    if type(r) == 'table' and r.err then
      failed[#failed+1] = (i+1)/2
      failed[#failed+1] = r.err
    end
  end
end
return failed
`)

// resetRevision sets KEYS[1] to ARGV[1], or to ARGV[2] (the next position)
// when it holds ARGV[1] already: a gap's reset must change every revision,
// or a reader holding that very value from another server would not see it
// move. A key of another type is overwritten.
var resetRevision = redis.NewScript(`
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
`)

// resetRevisions is resetRevision for many keys: ARGV holds triples of a
// key, its pg_lsn text and the next position's. It returns what
// setRevisions does.
var resetRevisions = redis.NewScript(`
local failed = {}
for i = 1, #ARGV, 3 do
  local ok, cur = pcall(redis.call, 'GET', ARGV[i])
  local v = ARGV[i+1]
  if ok and cur == v then v = ARGV[i+2] end
  local r = redis.pcall('SET', ARGV[i], v)
  if type(r) == 'table' and r.err then
    failed[#failed+1] = (i+2)/3
    failed[#failed+1] = r.err
  end
end
return failed
`)

// revisions are revision keys to set, each with its pg_lsn text.
type revisions struct {
	keys, lsns []string
	// reset is set for a gap's revisions: they are set even backwards,
	// since the server, and with it the LSN sequence, may have changed.
	reset bool
}

func (revs *revisions) add(key, lsn string) {
	revs.keys = append(revs.keys, key)
	revs.lsns = append(revs.lsns, lsn)
}

// exactRevisions returns the exact revisions plans move, each key once with
// the last LSN that names it (revisions only move forward), in the order
// the plans first name them. A gap's plan is applied alone.
func exactRevisions(plans []*rules.Plan) revisions {
	revs := revisions{reset: len(plans) == 1 && plans[0].Gap}
	at := make(map[string]int)
	for _, p := range plans {
		for _, rev := range p.Revisions {
			if rev.IsPattern {
				continue
			}
			lsn := p.CommitLSN.String()
			if i, ok := at[rev.Key]; ok {
				revs.lsns[i] = lsn
				continue
			}
			at[rev.Key] = len(revs.keys)
			revs.add(rev.Key, lsn)
		}
	}
	return revs
}

// queueRevisions queues on pipe the script calls that set revs, per keys
// a call. Once pipe has run, failed returns the keys they could not set,
// by their index in revs, and the first error.
func queueRevisions(ctx context.Context, pipe redis.Pipeliner, revs revisions, per int) (failed func() ([]int, error)) {
	script, width := setRevisions, 2
	if revs.reset {
		script, width = resetRevisions, 3
	}
	var calls []*redis.Cmd
	args := make([]any, 0, width*min(len(revs.keys), per))
	for i, k := range revs.keys {
		args = append(args, k, revs.lsns[i])
		if revs.reset {
			args = append(args, nextLSN(revs.lsns[i]))
		}
		if len(args) == width*per || i == len(revs.keys)-1 {
			calls = append(calls, script.Eval(ctx, pipe, nil, args...))
			args = args[:0:0]
		}
	}
	return func() ([]int, error) {
		var keys []int
		var first error
		for c, call := range calls {
			res, err := call.Slice()
			if err != nil {
				for i := c * per; i < min((c+1)*per, len(revs.keys)); i++ {
					keys = append(keys, i)
				}
				first = cmp.Or(first, err)
				continue
			}
			for j := 0; j+1 < len(res); j += 2 {
				n, _ := res[j].(int64)
				keys = append(keys, c*per+int(n)-1)
				first = cmp.Or(first, fmt.Errorf("set revision %s: %v", revs.keys[c*per+int(n)-1], res[j+1]))
			}
		}
		return keys, first
	}
}

// nextLSN returns the position after lsn (pg_lsn text).
func nextLSN(lsn string) string {
	if l, err := pglogrepl.ParseLSN(lsn); err == nil {
		return (l + 1).String()
	}
	return lsn
}

// writeRevisions sets revs, in a round trip of their own.
func (r *Redis) writeRevisions(ctx context.Context, revs revisions) error {
	if r.cluster {
		return r.setRevisionsByMaster(ctx, revs)
	}
	pipe := r.client.Pipeline()
	failed := queueRevisions(ctx, pipe, revs, r.cfg.UnlinkBatch)
	if err := exec(ctx, pipe); err != nil {
		return err
	}
	_, err := failed()
	return err
}

// setRevisionsByMaster sets a Cluster's revisions with script calls sent
// to each master for the keys of the slots it serves, side by side. Those
// a master could not set, because their slot moved or is moving, or the
// slot map is stale, are set again one key per call, through the client's
// routing.
func (r *Redis) setRevisionsByMaster(ctx context.Context, revs revisions) error {
	if len(revs.keys) == 0 {
		return nil
	}
	cc := r.client.(*redis.ClusterClient)
	type group struct {
		revisions
		at []int // each key's index in revs
	}
	groups := map[*redis.Client]*group{}
	bySlot := map[int]*group{}
	for i, k := range revs.keys {
		slot := hashSlot(k)
		g := bySlot[slot]
		if g == nil {
			c, err := cc.MasterForKey(ctx, k)
			if err != nil {
				return err
			}
			if g = groups[c]; g == nil {
				g = &group{revisions: revisions{reset: revs.reset}}
				groups[c] = g
			}
			bySlot[slot] = g
		}
		g.add(k, revs.lsns[i])
		g.at = append(g.at, i)
	}
	var mu sync.Mutex
	var again []int
	var wg sync.WaitGroup
	for c, g := range groups {
		wg.Go(func() {
			pipe := c.Pipeline()
			failed := queueRevisions(ctx, pipe, g.revisions, r.cfg.UnlinkBatch)
			_ = exec(ctx, pipe) // each call's own error is in failed
			keys, err := failed()
			if len(keys) == 0 {
				return
			}
			r.log.Debug("set revisions on their master; setting the rest one by one", "master", c.Options().Addr, "keys", len(keys), "err", err)
			mu.Lock()
			defer mu.Unlock()
			for _, i := range keys {
				again = append(again, g.at[i])
			}
		})
	}
	wg.Wait()
	if len(again) == 0 {
		return nil
	}
	slices.Sort(again) // in the batch's order
	pipe := r.client.Pipeline()
	for _, i := range again {
		if revs.reset {
			resetRevision.Eval(ctx, pipe, []string{revs.keys[i]}, revs.lsns[i], nextLSN(revs.lsns[i]))
		} else {
			setRevision.Eval(ctx, pipe, []string{revs.keys[i]}, revs.lsns[i])
		}
	}
	return exec(ctx, pipe)
}
