package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pos is a position in a rules file; Line and Col count from 1, Col in
// characters.
type Pos struct {
	Line, Col int
}

// File is a parsed and validated rules file.
type File struct {
	Name       string
	Schema     string // the "$schema" reference, if any
	Sections   []*Section
	Rules      []*Rule
	Invariants []*Invariant
}

// Section is a named group of cache entries.
type Section struct {
	Name        string
	Pos         Pos
	Description string
	Keys        []*Template
	Revision    *Template // nil when the section has none
	Channel     string
}

// Rule says which changes invalidate which sections.
type Rule struct {
	Name        string
	Pos         Pos
	Description string
	Tables      []string // schema-qualified
	Operations  []string // empty: all four
	Columns     []string // empty: any change
	Invalidate  []string
}

// Invariant is a condition every UPDATE of a table must keep.
type Invariant struct {
	Name           string
	Pos            Pos
	Description    string
	Table          string // schema-qualified
	WhenChanged    []string
	RequireChanged []string
	Severity       string // info, warning, error or critical
	Message        string
	Invalidate     []string
}

// Section returns the section with the given name, or nil.
func (f *File) Section(name string) *Section {
	for _, s := range f.Sections {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Operations are the change kinds a rule may name.
var Operations = []string{"insert", "update", "delete", "truncate"}

// Severities are the levels an invariant may be logged at.
var Severities = []string{"info", "warning", "error", "critical"}

// A Problem is one thing wrong with a rules file.
type Problem struct {
	File string
	Pos  Pos // zero when not tied to a place
	Msg  string
}

func (p Problem) String() string {
	if p.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Pos.Line, p.Pos.Col, p.Msg)
}

// ParseError lists every problem found in a rules file, in file order.
type ParseError struct {
	Problems []Problem
}

func (e *ParseError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Parse parses and validates a rules file. On failure the error is a
// *ParseError listing every problem found.
func Parse(filename string, data []byte) (*File, error) {
	p := &parser{file: &File{Name: filename}}
	root, err := parseJSON(data)
	if err != nil {
		var se *syntaxError
		if errors.As(err, &se) {
			p.problem(se.pos, "%s", se.msg)
			return nil, &ParseError{Problems: p.problems}
		}
		return nil, err
	}
	p.document(root)
	if len(p.problems) > 0 {
		slices.SortStableFunc(p.problems, func(a, b Problem) int {
			if a.Pos.Line != b.Pos.Line {
				return a.Pos.Line - b.Pos.Line
			}
			return a.Pos.Col - b.Pos.Col
		})
		return nil, &ParseError{Problems: p.problems}
	}
	return p.file, nil
}

type parser struct {
	file     *File
	problems []Problem
}

func (p *parser) problem(pos Pos, format string, args ...any) {
	p.problems = append(p.problems, Problem{File: p.file.Name, Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// fields checks n is an object whose fields are among known, reporting
// unknown and duplicate ones, and returns the known ones by name.
func (p *parser) fields(n *node, what string, known ...string) map[string]*node {
	if n.kind != kindObject {
		p.problem(n.pos, "%s must be an object, not %s", what, n.kind)
		return nil
	}
	out := make(map[string]*node, len(n.fields))
	for _, f := range n.fields {
		if !slices.Contains(known, f.name) {
			if s := nearest(f.name, known); s != "" {
				p.problem(f.pos, "unknown field %q in %s (did you mean %q?)", f.name, what, s)
			} else {
				p.problem(f.pos, "unknown field %q in %s (known: %s)", f.name, what, strings.Join(known, ", "))
			}
			continue
		}
		if _, dup := out[f.name]; dup {
			p.problem(f.pos, "duplicate field %q in %s", f.name, what)
			continue
		}
		out[f.name] = f.val
	}
	return out
}

func (p *parser) str(n *node, what string) (string, bool) {
	if n == nil {
		return "", false
	}
	if n.kind != kindString {
		p.problem(n.pos, "%s must be a string, not %s", what, n.kind)
		return "", false
	}
	return n.str, true
}

// strings reads a non-empty list of distinct non-empty strings.
func (p *parser) strings(n *node, what string) ([]string, []Pos) {
	if n == nil {
		return nil, nil
	}
	if n.kind != kindArray {
		p.problem(n.pos, "%s must be a list of strings, not %s", what, n.kind)
		return nil, nil
	}
	if len(n.elems) == 0 {
		p.problem(n.pos, "%s is empty", what)
		return nil, nil
	}
	var out []string
	var pos []Pos
	for _, e := range n.elems {
		s, ok := p.str(e, what+" entry")
		if !ok {
			continue
		}
		if strings.TrimSpace(s) == "" {
			p.problem(e.pos, "%s has an empty entry", what)
			continue
		}
		if slices.Contains(out, s) {
			p.problem(e.pos, "%s lists %q twice", what, s)
			continue
		}
		out = append(out, s)
		pos = append(pos, e.pos)
	}
	return out, pos
}

func (p *parser) template(n *node, what string) *Template {
	s, ok := p.str(n, what)
	if !ok {
		return nil
	}
	if s == "" {
		p.problem(n.pos, "%s is empty", what)
		return nil
	}
	t, err := ParseTemplate(s)
	if err != nil {
		p.problem(n.pos, "%s: %v", what, err)
		return nil
	}
	t.Pos = n.pos
	return t
}

func (p *parser) document(root *node) {
	top := p.fields(root, "the rules file", "$schema", "sections", "rules", "invariants")
	if top == nil {
		return
	}
	if n := top["$schema"]; n != nil {
		p.file.Schema, _ = p.str(n, `"$schema"`)
	}
	if n := top["sections"]; n == nil {
		p.problem(root.pos, `the rules file has no "sections"`)
	} else {
		p.sections(n)
	}
	used := make(map[string]bool)
	if n := top["rules"]; n != nil {
		p.rules(n, used)
	}
	if n := top["invariants"]; n != nil {
		p.invariants(n, used)
	}
	if top["rules"] == nil && top["invariants"] == nil {
		p.problem(root.pos, `the rules file has neither "rules" nor "invariants"`)
	}
	for _, s := range p.file.Sections {
		if !used[s.Name] {
			p.problem(s.Pos, "section %q is not invalidated by any rule or invariant", s.Name)
		}
	}
}

func (p *parser) sections(n *node) {
	if n.kind != kindObject {
		p.problem(n.pos, `"sections" must be an object of named sections, not %s`, n.kind)
		return
	}
	if len(n.fields) == 0 {
		p.problem(n.pos, `"sections" is empty`)
	}
	seen := make(map[string]bool)
	for _, f := range n.fields {
		what := fmt.Sprintf("section %q", f.name)
		if f.name == "" {
			p.problem(f.pos, "a section has an empty name")
			continue
		}
		if seen[f.name] {
			p.problem(f.pos, "duplicate section %q", f.name)
			continue
		}
		seen[f.name] = true
		fs := p.fields(f.val, what, "keys", "revision", "channel", "description")
		if fs == nil {
			continue
		}
		s := &Section{Name: f.name, Pos: f.pos}
		s.Description, _ = p.str(fs["description"], what+` "description"`)
		if kn := fs["keys"]; kn != nil {
			if kn.kind != kindArray {
				p.problem(kn.pos, `%s "keys" must be a list of key templates, not %s`, what, kn.kind)
			} else if len(kn.elems) == 0 {
				p.problem(kn.pos, `%s "keys" is empty`, what)
			}
			seenKey := make(map[string]bool)
			for _, e := range kn.elems {
				t := p.template(e, what+" key")
				if t == nil {
					continue
				}
				if seenKey[t.Text] {
					p.problem(e.pos, "%s lists key %q twice", what, t.Text)
					continue
				}
				seenKey[t.Text] = true
				s.Keys = append(s.Keys, t)
			}
		}
		if rn := fs["revision"]; rn != nil {
			s.Revision = p.template(rn, what+" revision")
		}
		if cn := fs["channel"]; cn != nil {
			if c, ok := p.str(cn, what+` "channel"`); ok {
				if c == "" {
					p.problem(cn.pos, `%s "channel" is empty`, what)
				}
				s.Channel = c
			}
		}
		if fs["keys"] == nil && fs["revision"] == nil && fs["channel"] == nil {
			p.problem(f.pos, `%s has no "keys", "revision" or "channel": invalidating it would do nothing`, what)
		}
		p.file.Sections = append(p.file.Sections, s)
	}
}

// sectionRefs reads an "invalidate" list and marks the sections used.
func (p *parser) sectionRefs(n *node, what string, used map[string]bool) []string {
	names, pos := p.strings(n, what+` "invalidate"`)
	var known []string
	for _, s := range p.file.Sections {
		known = append(known, s.Name)
	}
	out := names[:0:0]
	for i, name := range names {
		if !slices.Contains(known, name) {
			if s := nearest(name, known); s != "" {
				p.problem(pos[i], "%s invalidates unknown section %q (did you mean %q?)", what, name, s)
			} else {
				p.problem(pos[i], "%s invalidates unknown section %q", what, name)
			}
			continue
		}
		used[name] = true
		out = append(out, name)
	}
	return out
}

// name reads a rule's or invariant's "name".
func (p *parser) name(fs map[string]*node, at Pos, what string, seen map[string]bool) string {
	n := fs["name"]
	if n == nil {
		p.problem(at, `%s has no "name"`, what)
		return ""
	}
	name, ok := p.str(n, what+` "name"`)
	if !ok {
		return ""
	}
	if strings.TrimSpace(name) == "" {
		p.problem(n.pos, `%s "name" is empty`, what)
		return ""
	}
	if seen[name] {
		p.problem(n.pos, "duplicate name %q", name)
	}
	seen[name] = true
	return name
}

func (p *parser) rules(n *node, used map[string]bool) {
	if n.kind != kindArray {
		p.problem(n.pos, `"rules" must be a list, not %s`, n.kind)
		return
	}
	seen := make(map[string]bool)
	for i, e := range n.elems {
		what := fmt.Sprintf("rule %d", i+1)
		fs := p.fields(e, what, "name", "description", "tables", "operations", "columns", "invalidate")
		if fs == nil {
			continue
		}
		r := &Rule{Pos: e.pos}
		if r.Name = p.name(fs, e.pos, what, seen); r.Name != "" {
			what = fmt.Sprintf("rule %q", r.Name)
		}
		r.Description, _ = p.str(fs["description"], what+` "description"`)
		if fs["tables"] == nil {
			p.problem(e.pos, `%s has no "tables"`, what)
		}
		tables, tpos := p.strings(fs["tables"], what+` "tables"`)
		for j, t := range tables {
			qt, err := qualify(t)
			if err != nil {
				p.problem(tpos[j], "%s: %v", what, err)
				continue
			}
			r.Tables = append(r.Tables, qt)
		}
		ops, opos := p.strings(fs["operations"], what+` "operations"`)
		for j, o := range ops {
			if !slices.Contains(Operations, o) {
				p.problem(opos[j], "%s: unknown operation %q (one of %s)", what, o, strings.Join(Operations, ", "))
				continue
			}
			r.Operations = append(r.Operations, o)
		}
		r.Columns, _ = p.strings(fs["columns"], what+` "columns"`)
		if fs["invalidate"] == nil {
			p.problem(e.pos, `%s has no "invalidate"`, what)
		}
		r.Invalidate = p.sectionRefs(fs["invalidate"], what, used)
		p.file.Rules = append(p.file.Rules, r)
	}
}

func (p *parser) invariants(n *node, used map[string]bool) {
	if n.kind != kindArray {
		p.problem(n.pos, `"invariants" must be a list, not %s`, n.kind)
		return
	}
	seen := make(map[string]bool)
	for i, e := range n.elems {
		what := fmt.Sprintf("invariant %d", i+1)
		fs := p.fields(e, what, "name", "description", "table", "when_changed", "require_changed",
			"severity", "message", "invalidate")
		if fs == nil {
			continue
		}
		inv := &Invariant{Pos: e.pos, Severity: "warning"}
		if inv.Name = p.name(fs, e.pos, what, seen); inv.Name != "" {
			what = fmt.Sprintf("invariant %q", inv.Name)
		}
		inv.Description, _ = p.str(fs["description"], what+` "description"`)
		if tn := fs["table"]; tn == nil {
			p.problem(e.pos, `%s has no "table"`, what)
		} else if t, ok := p.str(tn, what+` "table"`); ok {
			qt, err := qualify(t)
			if err != nil {
				p.problem(tn.pos, "%s: %v", what, err)
			}
			inv.Table = qt
		}
		for _, f := range []string{"when_changed", "require_changed"} {
			if fs[f] == nil {
				p.problem(e.pos, "%s has no %q", what, f)
			}
		}
		var wpos []Pos
		inv.WhenChanged, wpos = p.strings(fs["when_changed"], what+` "when_changed"`)
		inv.RequireChanged, _ = p.strings(fs["require_changed"], what+` "require_changed"`)
		for j, c := range inv.WhenChanged {
			if slices.Contains(inv.RequireChanged, c) {
				p.problem(wpos[j], "%s: column %q is in both when_changed and require_changed, so the invariant can never be broken", what, c)
			}
		}
		if sn := fs["severity"]; sn != nil {
			if s, ok := p.str(sn, what+` "severity"`); ok {
				if !slices.Contains(Severities, s) {
					p.problem(sn.pos, "%s: unknown severity %q (one of %s)", what, s, strings.Join(Severities, ", "))
				} else {
					inv.Severity = s
				}
			}
		}
		inv.Message, _ = p.str(fs["message"], what+` "message"`)
		if inv.Message == "" {
			inv.Message = fmt.Sprintf("%s changed without a change to %s",
				strings.Join(inv.WhenChanged, ", "), strings.Join(inv.RequireChanged, ", "))
		}
		if fs["invalidate"] != nil {
			inv.Invalidate = p.sectionRefs(fs["invalidate"], what, used)
		}
		p.file.Invariants = append(p.file.Invariants, inv)
	}
}

// qualify returns a table name as schema.table; an unqualified name means
// public.
func qualify(t string) (string, error) {
	if strings.ContainsAny(t, " \t\n\"") {
		return "", fmt.Errorf("table %q: write tables as schema.table without quotes or spaces", t)
	}
	schema, name, ok := strings.Cut(t, ".")
	if !ok {
		schema, name = "public", t
	}
	if schema == "" || name == "" || strings.Contains(name, ".") {
		return "", fmt.Errorf("table %q: write tables as schema.table", t)
	}
	return schema + "." + name, nil
}

// nearest returns the candidate closest to s when it is close enough to be
// a likely typo, or "".
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := distance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD > max(1, len(s)/3) {
		return ""
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
