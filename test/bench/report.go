package main

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
)

// report prints the table of every measure taken.
func (b *bench) report() {
	fmt.Printf("\n%-44s %-28s %s\n", "measure", "cdcd", "reference")
	fmt.Printf("%s\n", strings.Repeat("-", 100))
	for _, r := range b.rows {
		fmt.Printf("%-44s %-28s %s\n", r[0], r[1], r[2])
	}
	fmt.Printf("\nmachine: %d CPUs, %s/%s, PostgreSQL and Redis private instances\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
}

func (b *bench) row(what, cdcd, ref string) { b.rows = append(b.rows, [3]string{what, cdcd, ref}) }

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// median returns the middle value of v (the upper one of an even count).
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
