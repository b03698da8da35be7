package rules

import (
	"fmt"
	"slices"
	"strings"
)

// Advice is something a valid rules file implies for the applications that
// fill its keys through the read-through protocol (docs/consistency.md).
type Advice struct {
	Pos Pos
	// Note marks advice that needs no change: it says what the rules mean
	// for readers. Otherwise the advice is a warning.
	Note bool
	Msg  string
}

// ReaderAdvice reports the sections whose readers cannot be guarded against
// storing a stale value — keys without a revision, or a revision that names
// a column a key lacks — and, as notes, the revisions that guard more keys
// than one row's.
func (f *File) ReaderAdvice() []Advice {
	var out []Advice
	for _, s := range f.Sections {
		if len(s.Keys) == 0 {
			continue
		}
		if s.Revision == nil {
			out = append(out, Advice{Pos: s.Pos, Msg: fmt.Sprintf(
				"section %q has keys but no revision: readers that fill its keys cannot be guarded against storing a stale value", s.Name)})
			continue
		}
		rev := s.Revision.Columns()
		for _, k := range s.Keys {
			cols := k.Columns()
			if missing := absent(rev, cols); len(missing) > 0 {
				out = append(out, Advice{Pos: s.Revision.Pos, Msg: fmt.Sprintf(
					"section %q: revision %q names %s, which key %q lacks: readers of that key cannot find its revision and cannot be guarded",
					s.Name, s.Revision.Text, placeholders(missing), k.Text)})
			}
			if extra := absent(cols, rev); len(extra) > 0 {
				out = append(out, Advice{Pos: s.Revision.Pos, Note: true, Msg: fmt.Sprintf(
					"section %q: revision %q does not name %s of key %q: one revision guards every such key, so a change to any of them refuses fills of all (safe; more refusals than needed)",
					s.Name, s.Revision.Text, placeholders(extra), k.Text)})
			}
		}
	}
	return out
}

// absent returns the columns of want, once each, that have is missing.
func absent(want, have []string) []string {
	var out []string
	for _, c := range want {
		if !slices.Contains(have, c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}

func placeholders(cols []string) string {
	s := make([]string, len(cols))
	for i, c := range cols {
		s[i] = "{" + c + "}"
	}
	return strings.Join(s, ", ")
}
