package rules_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// tx is the shape the replication package asks of a transaction value
// handed over typed: the Builder must keep satisfying it.
type tx[T any] interface {
	Add(c *replication.Change)
	Merge(later T)
	Part() T
}

var _ tx[*rules.Builder] = (*rules.Builder)(nil)

// evaluateParts evaluates changes split into parts after the given change
// counts, as a streamed transaction arrives, and merges the parts in order.
func evaluateParts(t *testing.T, first *rules.Builder, next func(*rules.Builder) *rules.Builder, changes []*replication.Change, cuts ...int) *rules.Plan {
	parts := []*rules.Builder{first}
	for i, c := range changes {
		if slices.Contains(cuts, i) {
			parts = append(parts, next(first))
		}
		parts[len(parts)-1].Add(c)
	}
	for _, p := range parts[1:] {
		first.Merge(p)
		if err := rules.CheckAccounting(first); err != nil {
			t.Fatal(err)
		}
	}
	return first.Plan(commit)
}

func part(b *rules.Builder) *rules.Builder { return b.Part() }

// A transaction merged from parts plans what the same changes make in one
// part: keys once, patterns, revisions, and invariants compared from the
// first part's "before" to the last part's "at commit".
func TestMergeParts(t *testing.T) {
	rs := compile(t, evalRules)
	old := []string{"1", "0.1", "0.2", "3", "n"}
	changes := []*replication.Change{
		ins(runsF, "1", "7", "p"),
		ins(events, "1", "x"),
		upd(fnF, old, "1", "0.5", "0.2", "3", "n"), // broken here...
		ins(runsF, "2", "7", "p"),                  // the same key again
		truncate(runsF),
		upd(fnF, []string{"1", "0.5", "0.2", "3", "n"}, "1", "0.5", "0.2", "3", "m"), // ...still broken at commit
		upd(fnF, []string{"2", "0.1", "0.2", "3", "n"}, "2", "0.5", "0.2", "3", "n"), // broken...
		upd(fnF, []string{"2", "0.5", "0.2", "3", "n"}, "2", "0.5", "0.2", "4", "n"), // ...and mended by a bump
		ins(tasks, "1", "t", "s", "n"),
	}
	whole := evaluate(rs, changes...)
	for _, cuts := range [][]int{{1}, {3, 5}, {1, 2, 3, 4, 5, 6, 7, 8}} {
		t.Run(fmt.Sprint("cut at ", cuts), func(t *testing.T) {
			p := evaluateParts(t, rs.Begin(begin), part, changes, cuts...)
			same := func(what string, got, want []string) {
				t.Helper()
				if !slices.Equal(got, want) {
					t.Errorf("%s\n got %q\nwant %q", what, got, want)
				}
			}
			same("keys", keyList(p), keyList(whole))
			same("patterns", patternList(p), patternList(whole))
			same("revisions", revisionList(p), revisionList(whole))
			if len(p.Violations) != 1 || p.Violations[0].PrimaryKey[0].Value == nil || *p.Violations[0].PrimaryKey[0].Value != "1" {
				t.Errorf("violations %+v, want row 1's", p.Violations)
			}
			if p.Changes != len(changes) || len(p.Messages) != len(whole.Messages) {
				t.Errorf("%d changes, %d messages; want %d, %d", p.Changes, len(p.Messages), len(changes), len(whole.Messages))
			}
			for i := range p.Messages {
				if string(p.Messages[i].Payload) != string(whole.Messages[i].Payload) {
					t.Errorf("message %d: %s, want %s", i, p.Messages[i].Payload, whole.Messages[i].Payload)
				}
			}
		})
	}
}

// A part escalated past the key limit makes the merged section escalate:
// its keys are gone from the part and only its pattern stands for them.
func TestMergeEscalatedPart(t *testing.T) {
	rs := compile(t, evalRules, rules.WithMaxTxKeys(3))
	changes := repeat(10, func(i int) *replication.Change { return ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p") })
	p := evaluateParts(t, rs.Begin(begin), part, changes, 1)
	if got, want := patternList(p), []string{"nodb:*:climate run/climate-run/escalated"}; !slices.Equal(got, want) {
		t.Errorf("patterns %q, want %q", got, want)
	}
	if len(p.Keys) != 0 {
		t.Errorf("keys %q next to the pattern", keyList(p))
	}
}

// Rules reloaded between two parts of a streamed transaction: the parts
// were begun under two Rules values. Merging them must neither crash nor
// lose an invalidation, in either order.
func TestMergeAcrossReload(t *testing.T) {
	before := compile(t, `{"sections": {
		"run":  {"keys": ["nodb:{run_id}:climate"], "revision": "rev:run:{run_id}", "channel": "c"},
		"gone": {"keys": ["gone:{run_id}"], "revision": "rev:gone", "channel": "g"}},
		"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["run", "gone"]}],
		"invariants": [{"name": "bump", "table": "public.impact_functions", "when_changed": ["mdd_x"], "require_changed": ["version"]}]}`,
		rules.WithMaxTxKeys(4))
	after := compile(t, `{"sections": {
		"run":  {"keys": ["v2:{run_id}"], "revision": "rev2:{run_id}", "channel": "c"},
		"new":  {"keys": ["new:{run_id}"], "channel": "n"}},
		"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["run", "new"]}],
		"invariants": [{"name": "bump", "table": "public.impact_functions", "when_changed": ["mdd_y"], "require_changed": ["version"]}]}`,
		rules.WithMaxTxKeys(4))
	row := func(i int) *replication.Change { return ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p") }
	bump := func(from, to string) *replication.Change {
		return upd(fnF, []string{"1", from, from, "3", "n"}, "1", to, to, "3", "n")
	}

	for _, tc := range []struct {
		name         string
		first, later *rules.Rules
	}{{"reloaded", before, after}, {"reverted", after, before}} {
		t.Run(tc.name, func(t *testing.T) {
			first := tc.first.Begin(begin)
			first.Add(row(1))
			first.Add(bump("0.1", "0.5"))
			later := tc.later.Begin(begin)
			later.Add(row(2))
			later.Add(bump("0.5", "0.6"))
			want := evaluate(tc.later, row(2)) // what the later part alone must still delete
			first.Merge(later)
			if err := rules.CheckAccounting(first); err != nil {
				t.Fatal(err)
			}
			p := first.Plan(commit)

			covered := func(key string) bool {
				for _, k := range p.Keys {
					if k.Key == key {
						return true
					}
				}
				for _, pt := range p.Patterns {
					if strings.HasSuffix(pt.Pattern, ":*") && strings.HasPrefix(key, strings.TrimSuffix(pt.Pattern, "*")) ||
						pt.Pattern == key {
						return true
					}
				}
				return false
			}
			for _, k := range want.Keys {
				if !covered(k.Key) {
					t.Errorf("the later part's key %s was lost: keys %q, patterns %q", k.Key, keyList(p), patternList(p))
				}
			}
			revs := revisionList(p)
			for _, r := range revisionList(want) {
				if !slices.Contains(revs, r) {
					t.Errorf("the later part's revision %s was lost: %q", r, revs)
				}
			}
			var channels []string
			for _, m := range p.Messages {
				channels = append(channels, m.Channel)
			}
			for _, m := range want.Messages {
				if !slices.Contains(channels, m.Channel) {
					t.Errorf("no message on %s: %q", m.Channel, channels)
				}
			}
			// The invariant watches other columns in each version: the row
			// cannot be compared, and must not be reported as broken.
			if len(p.Violations) != 0 {
				t.Errorf("violations %+v", p.Violations)
			}
		})
	}

	t.Run("escalated after the merge", func(t *testing.T) {
		first := before.Begin(begin)
		first.Add(row(1))
		later := after.Begin(begin)
		later.Add(row(2))
		first.Merge(later)
		// Past four keys "run" escalates: the pattern of each definition
		// must stand for the keys rendered from it.
		third := before.Begin(begin)
		for i := 3; i < 9; i++ {
			third.Add(row(i))
		}
		first.Merge(third)
		p := first.Plan(commit)
		pats := patternList(p)
		for _, want := range []string{"nodb:*:climate run/", "v2:* run/"} {
			if !slices.ContainsFunc(pats, func(s string) bool { return strings.HasPrefix(s, want) }) {
				t.Errorf("no pattern %s…: %q", want, pats)
			}
		}
		for _, k := range p.Keys {
			if k.Section == "run" {
				t.Errorf("key %s kept next to the pattern", k.Key)
			}
		}
		revs := revisionList(p)
		for _, want := range []string{"rev:run:* run (pattern)", "rev2:* run (pattern)"} {
			if !slices.Contains(revs, want) {
				t.Errorf("no revision pattern %s: %q", want, revs)
			}
		}
	})
}

func TestMergeNothing(t *testing.T) {
	rs := compile(t, evalRules)
	b := rs.Begin(begin)
	b.Add(ins(runsF, "1", "7", "p"))
	b.Merge(nil)
	b.Merge(b)
	if got := keyList(b.Plan(commit)); len(got) != 1 {
		t.Errorf("keys %q", got)
	}
}
