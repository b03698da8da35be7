package rules_test

import (
	"fmt"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// The benchmarks follow the shapes the daemon sees: most transactions touch
// a row or two; bulk writes touch many rows of one table; streamed ones
// arrive in parts that are merged at commit.

// BenchmarkSmallTransaction: one row, a key, a revision and a channel
// message — the common case the Builder's inline storage is sized for.
func BenchmarkSmallTransaction(b *testing.B) {
	rs := compile(b, evalRules)
	change := ins(runsF, "1", "7", "p")
	b.ReportAllocs()
	for b.Loop() {
		tx := rs.Begin(begin)
		tx.Add(change)
		tx.Plan(commit)
	}
}

// BenchmarkTransaction: n distinct rows, past the point where the Builder
// indexes its keys in maps.
func BenchmarkTransaction(b *testing.B) {
	rs := compile(b, evalRules)
	for _, n := range []int{10, 1000} {
		changes := repeat(n, func(i int) *replication.Change { return ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p") })
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				evaluate(rs, changes...)
			}
		})
	}
}

// BenchmarkInvariantRows: UPDATEs of rows an invariant watches, each row
// kept until commit.
func BenchmarkInvariantRows(b *testing.B) {
	rs := compile(b, evalRules)
	changes := repeat(1000, func(i int) *replication.Change {
		id := fmt.Sprint(i)
		return upd(fnF, []string{id, "0.1", "0.2", "3", "n"}, id, "0.5", "0.2", "3", "n")
	})
	b.ReportAllocs()
	for b.Loop() {
		evaluate(rs, changes...)
	}
}

// BenchmarkMerge: a streamed transaction of 100 parts of 10 rows each.
func BenchmarkMerge(b *testing.B) {
	rs := compile(b, evalRules)
	changes := repeat(1000, func(i int) *replication.Change { return ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p") })
	b.ReportAllocs()
	for b.Loop() {
		first := rs.Begin(begin)
		parts := []*rules.Builder{first}
		for i, c := range changes {
			if i%10 == 0 && i > 0 {
				parts = append(parts, rs.Begin(begin))
			}
			parts[len(parts)-1].Add(c)
		}
		for _, p := range parts[1:] {
			first.Merge(p)
		}
		first.Plan(commit)
	}
}
