package main

import (
	"cmp"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"unicode/utf8"
)

// report prints the table of every measure taken.
func (b *bench) report() {
	fmt.Printf("\n%-44s %-28s %s\n", "measure", "cdcd", "reference")
	fmt.Printf("%s\n", strings.Repeat("-", 100))
	for _, r := range b.rows {
		fmt.Printf("%-44s %-28s %s\n", r[0], r[1], r[2])
	}
	for _, g := range b.grids {
		g.print()
	}
	fmt.Printf("\nmachine: %d CPUs, %s/%s, PostgreSQL and Redis private instances\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
}

// grid is a measure's own table, printed after the main one.
type grid struct {
	title string
	head  []string
	rows  [][]string
}

func (g grid) print() {
	width := make([]int, len(g.head))
	for _, r := range append([][]string{g.head}, g.rows...) {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	line := func(r []string) {
		var sb strings.Builder
		for i, c := range r {
			fmt.Fprintf(&sb, "%-*s  ", width[i], c)
		}
		fmt.Println(strings.TrimRight(sb.String(), " "))
	}
	fmt.Printf("\n%s\n", g.title)
	line(g.head)
	total := 0
	for _, w := range width {
		total += w + 2
	}
	fmt.Println(strings.Repeat("-", total-2))
	for _, r := range g.rows {
		line(r)
	}
}

func (b *bench) row(what, cdcd, ref string) { b.rows = append(b.rows, [3]string{what, cdcd, ref}) }

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }

// median returns the middle value of v (the upper one of an even count).
func median[T cmp.Ordered](v []T) T {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
