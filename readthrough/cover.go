package readthrough

import (
	"fmt"
	"slices"

	"github.com/cdcd/cdcd/rules"
)

// maxReadings bounds how many readings of one key against one template are
// guarded; a key with more is refused (ErrAmbiguous).
const maxReadings = 16

// cover is one key template of a section, with the revision that guards the
// keys it renders.
type cover struct {
	section  string
	key      *rules.Template
	revision *rules.Template // nil: nothing guards these keys
	// unguarded says why, when revision is nil or cannot be rendered from
	// the key's values.
	unguarded string
}

func coversOf(f *rules.File) []cover {
	var out []cover
	for _, s := range f.Sections {
		for _, k := range s.Keys {
			c := cover{section: s.Name, key: k, revision: s.Revision}
			switch {
			case s.Revision == nil:
				c.unguarded = fmt.Sprintf("section %q has no revision", s.Name)
			case !subset(s.Revision.Columns(), k.Columns()):
				c.revision = nil
				c.unguarded = fmt.Sprintf("revision %q of section %q names a column key %q lacks", s.Revision.Text, s.Name, k.Text)
			}
			out = append(out, c)
		}
	}
	return out
}

func subset(a, b []string) bool {
	for _, c := range a {
		if !slices.Contains(b, c) {
			return false
		}
	}
	return true
}

// revisions returns the revision keys that guard key: those of every
// reading of every template that matches it. With allowUnguarded, templates
// without a usable revision add none; otherwise they are an error.
func revisions(covers []cover, key string, allowUnguarded bool) ([]string, error) {
	var out []string
	claimed := false
	for _, c := range covers {
		readings, complete := c.key.MatchAll(key, maxReadings)
		if len(readings) == 0 {
			continue
		}
		claimed = true
		if c.revision == nil {
			if allowUnguarded {
				continue
			}
			return nil, fmt.Errorf("key %q: %s: %w", key, c.unguarded, ErrUnguarded)
		}
		if !complete {
			return nil, fmt.Errorf("key %q against %q of section %q: %w", key, c.key.Text, c.section, ErrAmbiguous)
		}
		for _, r := range readings {
			rev, _ := c.revision.RenderValues(r) // coversOf checked the columns
			if !slices.Contains(out, rev) {
				out = append(out, rev)
			}
		}
	}
	if !claimed {
		return nil, fmt.Errorf("key %q: %w", key, ErrNoSection)
	}
	return out, nil
}
