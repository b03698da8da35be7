// Package catalog checks a rules file against a live database: tables and
// columns exist, the publication holds the tables, and each table's replica
// identity gives cdcd the old values its rules and invariants need.
package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pgx/v5"
)

// Severity of a finding.
type Severity int

const (
	Warning Severity = iota // works, at a cost the DBA should know
	Error                   // does not work as written
	Note                    // works: what the catalog shows, for the record
)

func (s Severity) String() string {
	switch s {
	case Error:
		return "error"
	case Note:
		return "note"
	}
	return "warning"
}

// Finding is one thing the catalog says about the rules.
type Finding struct {
	Severity  Severity
	Pos       rules.Pos
	Rule      string // the rule's name, when about a rule
	Invariant string // the invariant's name, when about an invariant
	Table     string
	Msg       string
}

// Format renders a finding as FILE:LINE:COL: severity: message.
func (f Finding) Format(file string) string {
	if f.Pos.Line == 0 {
		return fmt.Sprintf("%s: %s: %s", file, f.Severity, f.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", file, f.Pos.Line, f.Pos.Col, f.Severity, f.Msg)
}

// Querier is what Check needs of a connection (*pgx.Conn, pgxpool.Pool).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type table struct {
	exists   bool
	identity byte // d, n, f, i
	columns  []string
	identCol []string // columns the old row carries under the identity
}

// Check reports every problem of f against the database. publication is
// the publication cdcd streams; when it does not exist cdcd will create it,
// so membership is not checked.
func Check(ctx context.Context, q Querier, f *rules.File, publication string) ([]Finding, error) {
	tables, err := describeAll(ctx, q, f)
	if err != nil {
		return nil, err
	}
	published, pubExists, err := publicationTables(ctx, q, publication)
	if err != nil {
		return nil, err
	}
	parts, err := readPartitions(ctx, q, publication, tableNames(f))
	if err != nil {
		return nil, err
	}

	var out []Finding
	reported := map[string]bool{}
	tableOK := func(pos rules.Pos, owner Finding, name string) *table {
		t := tables[name]
		key := name
		if !t.exists {
			if !reported[key] {
				reported[key] = true
				fd := owner
				fd.Severity, fd.Pos, fd.Table = Error, pos, name
				fd.Msg = fmt.Sprintf("table %s does not exist", name)
				out = append(out, fd)
			}
			return nil
		}
		if pubExists && !published[name] && !parts.Covered(name) && !parts.PartlyCovered(name) && !reported["pub:"+key] {
			reported["pub:"+key] = true
			fd := owner
			fd.Severity, fd.Pos, fd.Table = Error, pos, name
			fd.Msg = fmt.Sprintf("table %s is not in publication %s: ALTER PUBLICATION %s ADD TABLE %s",
				name, publication, pgx.Identifier{publication}.Sanitize(), name)
			out = append(out, fd)
		}
		return t
	}
	columnsExist := func(owner Finding, t *table, name string, cols []string, what string) bool {
		ok := true
		for _, c := range cols {
			if !slices.Contains(t.columns, c) {
				fd := owner
				fd.Severity, fd.Table = Error, name
				fd.Msg = fmt.Sprintf("%s: table %s has no column %q", what, name, c)
				out = append(out, fd)
				ok = false
			}
		}
		return ok
	}

	for _, r := range f.Rules {
		owner := Finding{Pos: r.Pos, Rule: r.Name}
		ops := r.Operations
		if len(ops) == 0 {
			ops = rules.Operations
		}
		needsOld := slices.Contains(ops, "update") || slices.Contains(ops, "delete")
		for _, name := range r.Tables {
			t := tableOK(r.Pos, owner, name)
			if t == nil {
				continue
			}
			prefix := fmt.Sprintf("rule %q", r.Name)
			columnsExist(owner, t, name, r.Columns, prefix+" columns")
			if len(r.Columns) > 0 && t.identity != 'f' && slices.Contains(ops, "update") {
				fd := owner
				fd.Severity, fd.Table = Warning, name
				fd.Msg = fmt.Sprintf("%s: table %s has REPLICA IDENTITY %s, so an UPDATE carries no old row and the column filter cannot tell what changed: every UPDATE matches. ALTER TABLE %s REPLICA IDENTITY FULL removes that cost",
					prefix, name, identityName(t.identity), name)
				out = append(out, fd)
			}
			for _, sn := range r.Invalidate {
				s := f.Section(sn)
				if s == nil {
					continue
				}
				for _, tpl := range templates(s) {
					what := fmt.Sprintf("%s: section %q template %q", prefix, s.Name, tpl.Text)
					if !columnsExist(owner, t, name, tpl.Columns(), what) {
						continue
					}
					if !needsOld || t.identity == 'f' {
						continue
					}
					var outside []string
					for _, c := range tpl.Columns() {
						if !slices.Contains(t.identCol, c) && !slices.Contains(outside, c) {
							outside = append(outside, c)
						}
					}
					if len(outside) > 0 {
						fd := owner
						fd.Severity, fd.Table = Warning, name
						fd.Msg = fmt.Sprintf("%s: column %s is outside table %s's replica identity (%s), so the old key of an UPDATE or DELETE cannot be resolved and cdcd deletes the pattern %q instead (SCAN of the keyspace). ALTER TABLE %s REPLICA IDENTITY FULL removes that cost",
							what, strings.Join(outside, ", "), name, identityName(t.identity), tpl.Pattern(), name)
						out = append(out, fd)
					}
				}
			}
		}
	}
	for _, inv := range f.Invariants {
		owner := Finding{Pos: inv.Pos, Invariant: inv.Name}
		t := tableOK(inv.Pos, owner, inv.Table)
		if t == nil {
			continue
		}
		prefix := fmt.Sprintf("invariant %q", inv.Name)
		columnsExist(owner, t, inv.Table, inv.WhenChanged, prefix+" when_changed")
		columnsExist(owner, t, inv.Table, inv.RequireChanged, prefix+" require_changed")
		if t.identity != 'f' {
			fd := owner
			fd.Severity, fd.Table = Error, inv.Table
			fd.Msg = fmt.Sprintf("%s cannot be checked: table %s has REPLICA IDENTITY %s, so an UPDATE carries no old row to compare. ALTER TABLE %s REPLICA IDENTITY FULL",
				prefix, inv.Table, identityName(t.identity), inv.Table)
			out = append(out, fd)
		}
	}
	pf, err := publicationFindings(ctx, q, f, publication, tables, published, pubExists)
	if err != nil {
		return nil, err
	}
	out = append(out, pf...)
	out = append(out, partitionFindings(f, parts, publication)...)
	sortFindings(out)
	return out, nil
}

// describeAll describes every table the rules and invariants name.
func describeAll(ctx context.Context, q Querier, f *rules.File) (map[string]*table, error) {
	tables := map[string]*table{}
	for _, n := range tableNames(f) {
		if _, ok := tables[n]; ok {
			continue
		}
		t, err := describe(ctx, q, n)
		if err != nil {
			return nil, err
		}
		tables[n] = t
	}
	return tables, nil
}

// tableNames lists the tables of the rules, then of the invariants, in
// file order, with repeats.
func tableNames(f *rules.File) []string {
	var names []string
	for _, r := range f.Rules {
		names = append(names, r.Tables...)
	}
	for _, inv := range f.Invariants {
		names = append(names, inv.Table)
	}
	return names
}

// sortFindings orders findings by their place in the file.
func sortFindings(out []Finding) {
	slices.SortStableFunc(out, func(a, b Finding) int {
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line - b.Pos.Line
		}
		return a.Pos.Col - b.Pos.Col
	})
}

// Unverifiable returns the invariants that cannot be checked, with why.
func Unverifiable(findings []Finding) map[string]string {
	out := map[string]string{}
	for _, f := range findings {
		if f.Invariant != "" && f.Severity == Error {
			if _, ok := out[f.Invariant]; !ok {
				out[f.Invariant] = f.Msg
			}
		}
	}
	return out
}

func templates(s *rules.Section) []*rules.Template {
	out := append([]*rules.Template(nil), s.Keys...)
	if s.Revision != nil {
		out = append(out, s.Revision)
	}
	return out
}

func identityName(b byte) string {
	switch b {
	case 'd':
		return "DEFAULT"
	case 'n':
		return "NOTHING"
	case 'i':
		return "USING INDEX"
	}
	return "FULL"
}

func describe(ctx context.Context, q Querier, name string) (*table, error) {
	schema, rel, _ := strings.Cut(name, ".")
	rows, err := q.Query(ctx, `
		SELECT c.relreplident::text, a.attname::text,
		       coalesce(a.attnum = ANY (i.indkey), false) AS in_identity
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
		LEFT JOIN pg_index i ON i.indrelid = c.oid AND (
		     (c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident))
		WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
		ORDER BY a.attnum`, schema, rel)
	if err != nil {
		return nil, fmt.Errorf("describe table %s: %w", name, err)
	}
	defer rows.Close()
	t := &table{}
	for rows.Next() {
		var ident, col string
		var inIdent bool
		if err := rows.Scan(&ident, &col, &inIdent); err != nil {
			return nil, err
		}
		t.exists = true
		t.identity = ident[0]
		t.columns = append(t.columns, col)
		if inIdent || t.identity == 'f' {
			t.identCol = append(t.identCol, col)
		}
	}
	return t, rows.Err()
}

func publicationTables(ctx context.Context, q Querier, pub string) (map[string]bool, bool, error) {
	rows, err := q.Query(ctx, `
		SELECT p.pubname IS NOT NULL, t.schemaname || '.' || t.tablename
		FROM (SELECT $1::name AS name) x
		LEFT JOIN pg_publication p ON p.pubname = x.name
		LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname`, pub)
	if err != nil {
		return nil, false, fmt.Errorf("read publication %s: %w", pub, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	exists := false
	for rows.Next() {
		var ok bool
		var t *string
		if err := rows.Scan(&ok, &t); err != nil {
			return nil, false, err
		}
		exists = exists || ok
		if t != nil {
			out[*t] = true
		}
	}
	return out, exists, rows.Err()
}
