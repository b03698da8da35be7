package rules_test

import (
	"slices"
	"testing"
)

const partitionRules = `{
  "sections": {
    "site": { "keys": ["site:{site}"] },
    "eu":   { "keys": ["eu:{id}"] },
    "both": { "keys": ["both"] }
  },
  "rules": [
    { "name": "readings", "tables": ["public.readings"], "invalidate": ["site"] },
    { "name": "eu-only", "tables": ["public.readings_eu"], "invalidate": ["eu"] },
    { "name": "both", "tables": ["public.readings", "public.readings_eu"], "invalidate": ["both"] }
  ],
  "invariants": [
    { "name": "bump", "table": "public.readings", "when_changed": ["v"], "require_changed": ["version"] }
  ]
}`

// A relation answers to every name in Names: a partition to its
// partitioned tables, a root published for its partitions to them.
func TestRulesMatchEveryNameOfARelation(t *testing.T) {
	rs := compile(t, partitionRules)
	eu := rel(1, "public.readings_eu", 'f', "id*", "site", "v", "version")
	eu.Names = []string{"public.readings_eu", "public.readings"}
	us := rel(2, "public.readings_us", 'f', "id*", "site", "v", "version")
	us.Names = []string{"public.readings_us", "public.readings"}
	root := rel(3, "public.readings", 'f', "id*", "site", "v", "version")
	root.Names = []string{"public.readings", "public.readings_eu", "public.readings_us"}
	alone := rel(4, "public.readings_eu", 'f', "id*", "site", "v", "version") // no Names: its own only

	for _, tc := range []struct {
		name string
		p    func() []string
		want []string
	}{
		{"a partition", func() []string { return keyList(evaluate(rs, ins(eu, "1", "eu", "a", "1"))) },
			[]string{"site:eu site/readings/new", "eu:1 eu/eu-only/new", "both both/both/literal"}},
		{"another partition", func() []string { return keyList(evaluate(rs, ins(us, "2", "us", "a", "1"))) },
			[]string{"site:us site/readings/new", "both both/both/literal"}},
		{"the root, for its partitions", func() []string { return keyList(evaluate(rs, ins(root, "3", "us", "a", "1"))) },
			[]string{"site:us site/readings/new", "eu:3 eu/eu-only/new", "both both/both/literal"}},
		{"a partition by its own name only", func() []string { return keyList(evaluate(rs, ins(alone, "4", "eu", "a", "1"))) },
			[]string{"eu:4 eu/eu-only/new", "both both/both/literal"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.p()
			slices.Sort(got)
			slices.Sort(tc.want)
			if !slices.Equal(got, tc.want) {
				t.Errorf("keys %v, want %v", got, tc.want)
			}
		})
	}

	// The partitioned table's invariant holds for its partitions.
	p := evaluate(rs, upd(eu, []string{"1", "eu", "a", "1"}, "1", "eu", "b", "1"))
	if len(p.Violations) != 1 || p.Violations[0].Invariant != "bump" {
		t.Errorf("violations %+v", p.Violations)
	}
}
