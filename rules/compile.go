package rules

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/cdcd/cdcd/replication"
)

// Rules is a compiled rules file: immutable and safe for concurrent use.
// Evaluation binds each relation's column layout once and caches it.
type Rules struct {
	file     *File
	sections []*section
	byName   map[string]*section
	tables   map[string]*tableRules
	opts     options

	mu    sync.Mutex
	binds map[uint32]*binding // by relation id; replaced when the relation is
}

type section struct {
	name     string
	keys     []*Template
	revision *Template
	channel  string
}

type rule struct {
	name     string
	ops      [replication.OpTruncate + 1]bool
	columns  []string
	sections []*section
}

type invariant struct {
	name           string
	table          string
	severity       string
	message        string
	whenChanged    []string
	requireChanged []string
	sections       []*section
}

type tableRules struct {
	rules      []*rule
	invariants []*invariant
}

// Load reads, parses and compiles a rules file.
func Load(path string, opts ...Option) (*Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	f, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	return Compile(f, opts...)
}

// Compile turns a parsed file into Rules. The file must come from Parse,
// which has validated it.
func Compile(f *File, opts ...Option) (*Rules, error) {
	rs := &Rules{file: f, tables: make(map[string]*tableRules), binds: make(map[uint32]*binding), opts: defaultOptions()}
	for _, o := range opts {
		o(&rs.opts)
	}
	byName := make(map[string]*section, len(f.Sections))
	rs.byName = byName
	for _, s := range f.Sections {
		sec := &section{name: s.Name, keys: s.Keys, revision: s.Revision, channel: s.Channel}
		byName[s.Name] = sec
		rs.sections = append(rs.sections, sec)
	}
	resolve := func(owner string, names []string) ([]*section, error) {
		out := make([]*section, 0, len(names))
		for _, n := range names {
			s, ok := byName[n]
			if !ok {
				return nil, fmt.Errorf("%s: unknown section %q", owner, n)
			}
			out = append(out, s)
		}
		return out, nil
	}
	table := func(t string) *tableRules {
		tr, ok := rs.tables[t]
		if !ok {
			tr = &tableRules{}
			rs.tables[t] = tr
		}
		return tr
	}
	for _, r := range f.Rules {
		secs, err := resolve(fmt.Sprintf("rule %q", r.Name), r.Invalidate)
		if err != nil {
			return nil, err
		}
		cr := &rule{name: r.Name, columns: r.Columns, sections: secs}
		ops := r.Operations
		if len(ops) == 0 {
			ops = []string{"insert", "update", "delete", "truncate"}
		}
		for _, o := range ops {
			op, ok := replication.ParseOp(o)
			if !ok {
				return nil, fmt.Errorf("rule %q: unknown operation %q", r.Name, o)
			}
			cr.ops[op] = true
		}
		for _, t := range r.Tables {
			tr := table(t)
			tr.rules = append(tr.rules, cr)
		}
	}
	for _, inv := range f.Invariants {
		secs, err := resolve(fmt.Sprintf("invariant %q", inv.Name), inv.Invalidate)
		if err != nil {
			return nil, err
		}
		sev := inv.Severity
		if sev == "" {
			sev = "warning"
		}
		tr := table(inv.Table)
		tr.invariants = append(tr.invariants, &invariant{
			name: inv.Name, table: inv.Table, severity: sev, message: inv.Message,
			whenChanged: inv.WhenChanged, requireChanged: inv.RequireChanged, sections: secs,
		})
	}
	return rs, nil
}

// File returns the parsed file the rules were compiled from.
func (rs *Rules) File() *File { return rs.file }

// Tables returns every table a rule or invariant names, sorted.
func (rs *Rules) Tables() []string {
	out := make([]string, 0, len(rs.tables))
	for t := range rs.tables {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// binding is a table's rules resolved against one relation's column layout.
type binding struct {
	rel        *replication.Relation
	rules      []boundRule
	invariants []boundInvariant
	// templates maps each template used by this table to its column
	// positions in the relation (-1 for a column the relation lacks).
	templates map[*Template][]int
	// missing lists the columns rules name that the relation lacks.
	missing []MissingColumn
}

// MissingColumn is a column a rule or invariant names that its table no
// longer has (dropped or renamed): the rule falls back to wider
// invalidation, never to matching nothing.
type MissingColumn struct {
	Rule   string
	Table  string
	Column string
}

type boundRule struct {
	*rule
	columns []int // -1: the relation lacks the column
}

type boundInvariant struct {
	*invariant
	when, require []int
}

func columnIndexes(rel *replication.Relation, names []string) []int {
	idx := make([]int, len(names))
	for i, n := range names {
		idx[i] = rel.ColumnIndex(n)
	}
	return idx
}

// bind returns the binding for rel, or nil when no rule names its table.
func (rs *Rules) bind(rel *replication.Relation) *binding {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if b, ok := rs.binds[rel.ID]; ok && b.rel == rel {
		return b
	}
	tr := rs.tablesOf(rel)
	if tr == nil {
		rs.binds[rel.ID] = &binding{rel: rel}
		return rs.binds[rel.ID]
	}
	b := &binding{rel: rel, templates: make(map[*Template][]int)}
	addSections := func(secs []*section) {
		for _, s := range secs {
			for _, t := range s.keys {
				b.templates[t] = columnIndexes(rel, t.Columns())
			}
			if s.revision != nil {
				b.templates[s.revision] = columnIndexes(rel, s.revision.Columns())
			}
		}
	}
	note := func(owner string, names []string) {
		for _, n := range names {
			if rel.ColumnIndex(n) < 0 && !slices.ContainsFunc(b.missing, func(m MissingColumn) bool { return m.Rule == owner && m.Column == n }) {
				b.missing = append(b.missing, MissingColumn{Rule: owner, Table: rel.Table(), Column: n})
			}
		}
	}
	for _, r := range tr.rules {
		b.rules = append(b.rules, boundRule{rule: r, columns: columnIndexes(rel, r.columns)})
		addSections(r.sections)
		note(r.name, r.columns)
		for _, s := range r.sections {
			for _, t := range s.keys {
				note(r.name, t.Columns())
			}
			if s.revision != nil {
				note(r.name, s.revision.Columns())
			}
		}
	}
	for _, inv := range tr.invariants {
		note(inv.name, inv.whenChanged)
		note(inv.name, inv.requireChanged)
		for _, s := range inv.sections {
			for _, t := range s.keys {
				note(inv.name, t.Columns())
			}
			if s.revision != nil {
				note(inv.name, s.revision.Columns())
			}
		}
		b.invariants = append(b.invariants, boundInvariant{
			invariant: inv,
			when:      columnIndexes(rel, inv.whenChanged),
			require:   columnIndexes(rel, inv.requireChanged),
		})
		addSections(inv.sections)
	}
	rs.binds[rel.ID] = b
	return b
}

// tablesOf gathers the rules and invariants of every table rel answers to
// (a partition answers to its partitioned tables too), each once, or
// returns nil when there are none.
func (rs *Rules) tablesOf(rel *replication.Relation) *tableRules {
	names := rel.MatchNames()
	if len(names) == 1 {
		return rs.tables[names[0]]
	}
	var out *tableRules
	for _, n := range names {
		tr := rs.tables[n]
		if tr == nil {
			continue
		}
		if out == nil {
			out = &tableRules{}
		}
		for _, r := range tr.rules {
			if !slices.Contains(out.rules, r) {
				out.rules = append(out.rules, r)
			}
		}
		for _, inv := range tr.invariants {
			if !slices.Contains(out.invariants, inv) {
				out.invariants = append(out.invariants, inv)
			}
		}
	}
	return out
}
