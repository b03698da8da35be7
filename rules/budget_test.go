package rules_test

import (
	"fmt"
	"path"
	"slices"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// compileBudget compiles src with a byte budget of what an empty
// transaction holds plus extra.
func compileBudget(t *testing.T, src string, extra int64) *rules.Rules {
	t.Helper()
	base, _ := rules.Budget(compile(t, src).Begin(begin))
	return compile(t, src, rules.WithMaxTxBytes(base+extra))
}

// withinBudget fails unless b's transaction counted what its parts hold and
// stays within its budget, or has nothing left to give up.
func withinBudget(t *testing.T, b *rules.Builder) {
	t.Helper()
	if err := rules.CheckAccounting(b); err != nil {
		t.Fatal(err)
	}
	if used, limit := rules.Budget(b); used > limit && !rules.Exhausted(b) {
		t.Fatalf("%d bytes held, over the budget of %d", used, limit)
	}
}

// covers reports whether the plan deletes key of section: exactly, or by a
// pattern of that section.
func covers(p *rules.Plan, section, key string) bool {
	for _, k := range p.Keys {
		if k.Section == section && k.Key == key {
			return true
		}
	}
	for _, pt := range p.Patterns {
		if ok, _ := path.Match(pt.Pattern, key); ok && pt.Section == section {
			return true
		}
	}
	return false
}

const budgetRules = `{"sections": {
	"short": {"keys": ["s:{run_id}", "lit"], "revision": "rev:core"},
	"long":  {"keys": ["a-rather-long-key-prefix-that-costs-more-bytes:{run_id}"], "revision": "rev:{run_id}"}},
	"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["short", "long"]}]}`

// Past the budget the section holding the most bytes escalates first, and
// only as much as needed: with a little more room the other section keeps
// its exact keys, and revision keys too. Literal keys and literal revisions
// always stay.
func TestBudgetEscalatesLargestFirst(t *testing.T) {
	const long = "a-rather-long-key-prefix-that-costs-more-bytes:"
	for _, tc := range []struct {
		extra    int64
		patterns []string // beside the long section's key pattern
	}{
		{6000, nil},
		{1500, []string{"s:* short/r/escalated"}},
	} {
		t.Run(fmt.Sprint(tc.extra, " bytes"), func(t *testing.T) {
			b := compileBudget(t, budgetRules, tc.extra).Begin(begin)
			for i := range 20 {
				b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p"))
				withinBudget(t, b)
			}
			p := b.Plan(commit)
			want := append([]string{long + "* long/r/escalated"}, tc.patterns...)
			if got := patternList(p); !slices.Equal(got, want) {
				t.Errorf("patterns %q, want %q", got, want)
			}
			for i := range 20 {
				if !covers(p, "short", fmt.Sprint("s:", i)) || !covers(p, "long", fmt.Sprint(long, i)) {
					t.Errorf("row %d not invalidated", i)
				}
			}
			if !covers(p, "short", "lit") {
				t.Errorf("the literal key was dropped: %q", keyList(p))
			}
			revs := revisionList(p)
			if !slices.Contains(revs, "rev:core short") {
				t.Errorf("the literal revision was dropped: %q", revs)
			}
			escalated := slices.Contains(revs, "rev:* long (pattern)")
			for i := range 20 {
				if exact := slices.Contains(revs, fmt.Sprint("rev:", i, " long")); exact == escalated {
					t.Errorf("revision of row %d: exact %v, pattern %v", i, exact, escalated)
				}
			}
		})
	}
}

// The parts of a streamed transaction share one budget. An escalation
// frees what every part holds, and each part that gave up keys holds the
// pattern itself: a part dropped with its aborted subtransaction must not
// take with it the pattern that stands for another part's keys.
func TestBudgetSharedByParts(t *testing.T) {
	rs := compileBudget(t, budgetRules, 8000)
	first := rs.Begin(begin)
	var parts []*rules.Builder
	for i := 0; ; i++ {
		if i == 100 {
			t.Fatal("nothing escalated: the test does not reach the budget")
		}
		p := first.Part()
		p.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p"))
		withinBudget(t, first)
		if rules.Escalated(first, "long") {
			break // this part's row made the transaction escalate: abort it
		}
		parts = append(parts, p)
	}
	for _, p := range parts {
		first.Merge(p)
		withinBudget(t, first)
	}
	p := first.Plan(commit)
	for i := range parts {
		if !covers(p, "short", fmt.Sprint("s:", i)) || !covers(p, "long", fmt.Sprint("a-rather-long-key-prefix-that-costs-more-bytes:", i)) {
			t.Errorf("row %d of a committed part not invalidated", i)
		}
	}
}

// Invariant row states past the budget: once nothing else can give way,
// the invariant is no longer checked in the transaction, and the plan says
// for how many rows. Its sections are still invalidated.
func TestBudgetGivesUpInvariant(t *testing.T) {
	src := `{"sections": {"impact": {"keys": ["impact:{id}:v{version}"]}},
		"rules": [],
		"invariants": [{"name": "bump", "table": "public.impact_functions", "when_changed": ["mdd_x"],
			"require_changed": ["version"], "invalidate": ["impact"]}]}`
	const rows = 100
	broken := func(i int) *replication.Change {
		id := fmt.Sprint(i)
		return upd(fnF, []string{id, "0.1", "0.2", "3", "n"}, id, "0.5", "0.2", "3", "n")
	}

	t.Run("under the budget every row is checked", func(t *testing.T) {
		p := evaluate(compileBudget(t, src, 1<<20), repeat(rows, broken)...)
		if len(p.Violations) != rows || p.Unchecked != nil {
			t.Fatalf("%d violations, unchecked %+v", len(p.Violations), p.Unchecked)
		}
	})

	b := compileBudget(t, src, 20000).Begin(begin)
	for i := range rows {
		b.Add(broken(i))
		withinBudget(t, b)
	}
	for i := range 10 {
		b.Add(broken(i)) // the same rows again: counted again
	}
	p := b.Plan(commit)
	if len(p.Unchecked) != 1 {
		t.Fatalf("unchecked %+v", p.Unchecked)
	}
	u := p.Unchecked[0]
	if u.Invariant != "bump" || u.Table != "public.impact_functions" || u.Reason != rules.UncheckedBudget {
		t.Errorf("unchecked %+v", u)
	}
	if len(p.Violations)+u.Rows != rows+10 {
		t.Errorf("%d violations and %d unchecked rows, want %d in all", len(p.Violations), u.Rows, rows+10)
	}
	for i := range rows {
		if !covers(p, "impact", fmt.Sprintf("impact:%d:v3", i)) {
			t.Errorf("row %d's key not invalidated", i)
		}
	}
	// The keys gave way before the invariant did.
	if got := patternList(p); !slices.Equal(got, []string{"impact:*:v* impact/bump/escalated"}) {
		t.Errorf("patterns %q", got)
	}
}

// Rows the budget gave up in one part are counted when the part is merged.
func TestBudgetGivenUpAcrossParts(t *testing.T) {
	src := `{"sections": {"s": {"channel": "c"}}, "rules": [],
		"invariants": [{"name": "bump", "table": "public.impact_functions", "when_changed": ["mdd_x"], "require_changed": ["version"], "invalidate": ["s"]}]}`
	first := compileBudget(t, src, 8000).Begin(begin)
	total := 0
	for i := range 40 {
		p := first.Part()
		id := fmt.Sprint(i)
		p.Add(upd(fnF, []string{id, "0.1", "0.2", "3", "n"}, id, "0.5", "0.2", "3", "n"))
		first.Merge(p)
		withinBudget(t, first)
		total++
	}
	p := first.Plan(commit)
	n := len(p.Violations)
	for _, u := range p.Unchecked {
		n += u.Rows
	}
	if n != total || len(p.Unchecked) == 0 {
		t.Errorf("%d violations, unchecked %+v: want %d rows in all", len(p.Violations), p.Unchecked, total)
	}
}

// An escalation keeps literal keys, whichever template comes first.
func TestEscalationKeepsLiteralKeys(t *testing.T) {
	for _, keys := range []string{`["lit", "run:{run_id}"]`, `["run:{run_id}", "lit"]`} {
		rs := compile(t, `{"sections": {"s": {"keys": `+keys+`, "revision": "rev"}},
			"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["s"]}]}`, rules.WithMaxTxKeys(1))
		p := evaluate(rs, ins(runsF, "1", "1", "p"), ins(runsF, "2", "2", "p"))
		if got, want := keyList(p), []string{"lit s/r/literal"}; !slices.Equal(got, want) {
			t.Errorf("keys %s: %q, want %q", keys, got, want)
		}
		if got, want := revisionList(p), []string{"rev s"}; !slices.Equal(got, want) {
			t.Errorf("keys %s: revisions %q, want %q", keys, got, want)
		}
	}
}
