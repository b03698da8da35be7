package rules

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
)

type item struct{ k, v string }

func (i item) id() string { return i.k }

// The set must answer the same on both sides of the switch from scanning to
// indexing, and across deletions that cross it back.
func TestSmallSet(t *testing.T) {
	for _, n := range []int{0, 1, smallSetMax - 1, smallSetMax, smallSetMax + 1, 3 * smallSetMax} {
		t.Run(fmt.Sprint(n, " items"), func(t *testing.T) {
			var s smallSet[item, string]
			for i := range n {
				if !s.add(item{fmt.Sprint(i), "first"}) {
					t.Fatalf("item %d not added", i)
				}
			}
			for i := range n {
				if s.add(item{fmt.Sprint(i), "again"}) {
					t.Fatalf("item %d added twice", i)
				}
			}
			if s.len() != n || (s.index != nil) != (n > smallSetMax) {
				t.Fatalf("%d items, indexed %v", s.len(), s.index != nil)
			}
			for i := range n {
				if j := s.find(fmt.Sprint(i)); j != i || s.items[j].v != "first" {
					t.Fatalf("find(%d) = %d", i, j)
				}
			}
			if s.has("absent") || s.find("absent") != -1 {
				t.Fatal("found an absent item")
			}

			// Delete the odd ones: order kept, positions follow.
			s.deleteFunc(func(it item) bool { i, _ := strconv.Atoi(it.k); return i%2 == 1 })
			var want []string
			for i := 0; i < n; i += 2 {
				want = append(want, fmt.Sprint(i))
			}
			var got []string
			for j, it := range s.items {
				got = append(got, it.k)
				if s.find(it.k) != j {
					t.Fatalf("after delete, find(%s) = %d, want %d", it.k, s.find(it.k), j)
				}
			}
			if !slices.Equal(got, want) || (s.index != nil) != (len(want) > smallSetMax) {
				t.Fatalf("after delete: %v (indexed %v), want %v", got, s.index != nil, want)
			}
			for i := 1; i < n; i += 2 {
				if s.has(fmt.Sprint(i)) {
					t.Fatalf("deleted item %d still there", i)
				}
			}
			if n > 0 && !s.add(item{"1", "back"}) {
				t.Fatal("a deleted item cannot be added again")
			}
		})
	}
}

// Inline storage is used in place: no allocation until it is full.
func TestSmallSetInline(t *testing.T) {
	var arr [2]item
	var s smallSet[item, string]
	allocs := testing.AllocsPerRun(10, func() {
		s.items = arr[:0]
		s.add(item{"a", ""})
		s.add(item{"b", ""})
		s.add(item{"a", ""})
	})
	if allocs != 0 || &s.items[0] != &arr[0] {
		t.Errorf("%v allocations", allocs)
	}
}
