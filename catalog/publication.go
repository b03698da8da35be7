package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pgx/v5"
)

// CheckPublication reports what the publication hides that the rules
// need — an operation it does not publish, a row filter, a column list
// leaving out a column the rules or the replica identity need — and rule
// tables whose UPDATE and DELETE the publication makes (or would make)
// fail because they have no usable replica identity. Every finding is an
// Error: the publication hides changes without any error in the stream,
// or breaks the application's writes. The daemon runs it before each
// replication session and before it takes reloaded rules; Check includes
// it.
func CheckPublication(ctx context.Context, q Querier, f *rules.File, publication string) ([]Finding, error) {
	tables, err := describeAll(ctx, q, f)
	if err != nil {
		return nil, err
	}
	member, exists, err := publicationTables(ctx, q, publication)
	if err != nil {
		return nil, err
	}
	out, err := publicationFindings(ctx, q, f, publication, tables, member, exists)
	if err != nil {
		return nil, err
	}
	sortFindings(out)
	return out, nil
}

// pubOptions is what a publication lets through.
type pubOptions struct {
	name   string
	ops    map[string]bool // operation -> published
	member map[string]bool // tables in it
	rels   map[string]pubRel
}

// pubRel is a table's row filter and column list (PostgreSQL 15).
type pubRel struct {
	rowFilter string   // the WHERE expression; "" when none
	columns   []string // the column list; nil when none
	hidden    []string // the table's columns the list leaves out
}

func publicationFindings(ctx context.Context, q Querier, f *rules.File, pub string,
	tables map[string]*table, member map[string]bool, exists bool) ([]Finding, error) {
	o, err := readPubOptions(ctx, q, pub, exists)
	if err != nil {
		return nil, err
	}
	o.member = member
	var names []string
	for _, n := range tableNames(f) {
		if t := tables[n]; t.exists && !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	ids, err := readIdentities(ctx, q, names)
	if err != nil {
		return nil, err
	}
	return pubFindings(f, o, tables, ids), nil
}

// use is what one rule or invariant needs of one table.
type use struct {
	owner   Finding // Pos and Rule or Invariant
	what    string  // `rule "x"` or `invariant "y"`
	ops     []string
	columns []string // columns it reads
	result  string   // what is lost when an operation is hidden
}

// uses lists, per table, what the rules and invariants need of it, in
// file order.
func uses(f *rules.File) map[string][]use {
	out := map[string][]use{}
	sectionColumns := func(names []string) []string {
		var cols []string
		for _, sn := range names {
			if s := f.Section(sn); s != nil {
				for _, tpl := range templates(s) {
					cols = append(cols, tpl.Columns()...)
				}
			}
		}
		return cols
	}
	for _, r := range f.Rules {
		ops := r.Operations
		if len(ops) == 0 {
			ops = rules.Operations
		}
		u := use{owner: Finding{Pos: r.Pos, Rule: r.Name}, what: fmt.Sprintf("rule %q", r.Name), ops: ops,
			columns: append(slices.Clone(r.Columns), sectionColumns(r.Invalidate)...),
			result:  "its sections are never invalidated for it"}
		for _, t := range r.Tables {
			out[t] = append(out[t], u)
		}
	}
	for _, inv := range f.Invariants {
		cols := append(slices.Concat(inv.WhenChanged, inv.RequireChanged), sectionColumns(inv.Invalidate)...)
		out[inv.Table] = append(out[inv.Table], use{owner: Finding{Pos: inv.Pos, Invariant: inv.Name},
			what: fmt.Sprintf("invariant %q", inv.Name), ops: []string{"update"}, columns: cols,
			result: "the invariant never fires"})
	}
	return out
}

// pubFindings is the pure part of CheckPublication.
func pubFindings(f *rules.File, o pubOptions, tables map[string]*table, ids map[string]replication.Identity) []Finding {
	var out []Finding
	need := uses(f)
	fixPublish := publishFix(o, need)
	done := map[string]bool{}
	for _, name := range tableNames(f) {
		t := tables[name]
		if done[name] || t == nil || !t.exists {
			continue
		}
		done[name] = true
		us := need[name]
		for _, u := range us {
			if fd, ok := hiddenOps(o, name, u, fixPublish); ok {
				out = append(out, fd)
			}
		}
		first := us[0].owner
		first.Severity, first.Table = Error, name
		if id, ok := ids[name]; ok && !id.Usable() && (o.ops["update"] || o.ops["delete"]) {
			fd := first
			fd.Msg = (&replication.IdentityError{Publication: o.name, Update: o.ops["update"], Delete: o.ops["delete"],
				Member: o.member[name], Tables: []replication.Identity{id}}).Error()
			out = append(out, fd)
		}
		rel, ok := o.rels[name]
		if !ok {
			continue
		}
		fix := readdFix(o.name, name, t, rel, us)
		if rel.rowFilter != "" {
			fd := first
			fd.Msg = fmt.Sprintf("publication %s has a row filter on %s (WHERE %s): changes of rows outside it never reach cdcd, which then neither invalidates their keys nor checks invariants on them. Fix: %s",
				o.name, name, rel.rowFilter, fix)
			out = append(out, fd)
		}
		if msg := hiddenColumns(o, name, t, rel, us); msg != "" {
			fd := first
			fd.Msg = msg + ". Fix: " + fix
			out = append(out, fd)
		}
	}
	return out
}

// hiddenOps reports the operations u needs that the publication does not
// publish.
func hiddenOps(o pubOptions, table string, u use, fix string) (Finding, bool) {
	var hidden []string
	for _, op := range u.ops {
		if !o.ops[op] {
			hidden = append(hidden, op)
		}
	}
	if len(hidden) == 0 {
		return Finding{}, false
	}
	fd := u.owner
	fd.Severity, fd.Table = Error, table
	fd.Msg = fmt.Sprintf("%s: publication %s does not publish %s (publish = '%s'), so no %s of %s reaches cdcd and %s. Fix: %s",
		u.what, o.name, strings.Join(hidden, ", "), strings.Join(publishedOps(o), ", "),
		strings.Join(hidden, " or "), table, u.result, fix)
	return fd, true
}

func publishedOps(o pubOptions) []string {
	var out []string
	for _, op := range rules.Operations {
		if o.ops[op] {
			out = append(out, op)
		}
	}
	return out
}

// publishFix is the statement that makes the publication publish every
// operation the rules need, keeping those it publishes already.
func publishFix(o pubOptions, need map[string][]use) string {
	var ops []string
	for _, op := range rules.Operations {
		wanted := o.ops[op]
		for _, us := range need {
			for _, u := range us {
				wanted = wanted || slices.Contains(u.ops, op)
			}
		}
		if wanted {
			ops = append(ops, op)
		}
	}
	return fmt.Sprintf("ALTER PUBLICATION %s SET (publish = '%s')", pgx.Identifier{o.name}.Sanitize(), strings.Join(ops, ", "))
}

// hiddenColumns says which columns the rules or the replica identity need
// that the table's column list leaves out; "" when none.
func hiddenColumns(o pubOptions, table string, t *table, rel pubRel, us []use) string {
	if rel.columns == nil {
		return ""
	}
	var needed []string
	for _, c := range rel.hidden {
		var by []string
		for _, u := range us {
			if slices.Contains(u.columns, c) && !slices.Contains(by, u.what) {
				by = append(by, u.what)
			}
		}
		if len(by) > 0 {
			needed = append(needed, fmt.Sprintf("%s (%s)", c, strings.Join(by, ", ")))
		}
	}
	var ident []string
	for _, c := range rel.hidden {
		if slices.Contains(t.identCol, c) {
			ident = append(ident, c)
		}
	}
	if len(needed) == 0 && len(ident) == 0 {
		return ""
	}
	msg := fmt.Sprintf("publication %s publishes only columns %s of %s", o.name, strings.Join(rel.columns, ", "), table)
	if len(needed) > 0 {
		msg += fmt.Sprintf(": it hides %s, which cdcd then cannot read", strings.Join(needed, ", "))
	}
	if len(ident) > 0 {
		msg += fmt.Sprintf("; it hides replica identity (%s) column %s, so cdcd cannot tell the old row's key", identityName(t.identity), strings.Join(ident, ", "))
		if o.ops["update"] || o.ops["delete"] {
			msg += " and every UPDATE and DELETE the application runs on the table fails"
		}
	}
	return msg
}

// readdFix is the statement that puts table back into the publication
// without a row filter and with every column cdcd needs, in one
// transaction so that no change goes unpublished in between.
func readdFix(pub, table string, t *table, rel pubRel, us []use) string {
	p := pgx.Identifier{pub}.Sanitize()
	add := table
	if rel.columns != nil {
		var cols []string
		for _, c := range t.columns {
			keep := slices.Contains(rel.columns, c) || slices.Contains(t.identCol, c)
			for _, u := range us {
				keep = keep || slices.Contains(u.columns, c)
			}
			if keep {
				cols = append(cols, pgx.Identifier{c}.Sanitize())
			}
		}
		add += " (" + strings.Join(cols, ", ") + ")"
	}
	return fmt.Sprintf("BEGIN; ALTER PUBLICATION %s DROP TABLE %s; ALTER PUBLICATION %s ADD TABLE %s; COMMIT", p, table, p, add)
}

// readPubOptions reads what publication pub publishes. A publication that
// does not exist is the one cdcd will create: everything, unfiltered.
func readPubOptions(ctx context.Context, q Querier, pub string, exists bool) (pubOptions, error) {
	o := pubOptions{name: pub, ops: map[string]bool{}, rels: map[string]pubRel{}}
	if !exists {
		for _, op := range rules.Operations {
			o.ops[op] = true
		}
		return o, nil
	}
	var ins, upd, del, trunc bool
	var version int
	err := queryRow(ctx, q, `SELECT pubinsert, pubupdate, pubdelete, pubtruncate, current_setting('server_version_num')::int
		FROM pg_publication WHERE pubname = $1`, []any{pub}, &ins, &upd, &del, &trunc, &version)
	if err != nil {
		return o, fmt.Errorf("read options of publication %s: %w", pub, err)
	}
	o.ops["insert"], o.ops["update"], o.ops["delete"], o.ops["truncate"] = ins, upd, del, trunc
	if version < 150000 {
		return o, nil // row filters and column lists came with PostgreSQL 15
	}
	rows, err := q.Query(ctx, `
		SELECT n.nspname || '.' || c.relname, coalesce(pg_get_expr(r.prqual, r.prrelid), ''),
		       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
		         WHERE a.attrelid = r.prrelid AND a.attnum = ANY (r.prattrs)),
		       (SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute a
		         WHERE a.attrelid = r.prrelid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
		           AND r.prattrs IS NOT NULL AND NOT a.attnum = ANY (r.prattrs))
		FROM pg_publication_rel r
		JOIN pg_publication p ON p.oid = r.prpubid
		JOIN pg_class c ON c.oid = r.prrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE p.pubname = $1 AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL)`, pub)
	if err != nil {
		return o, fmt.Errorf("read row filters and column lists of publication %s: %w", pub, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var rel pubRel
		if err := rows.Scan(&name, &rel.rowFilter, &rel.columns, &rel.hidden); err != nil {
			return o, fmt.Errorf("read row filters and column lists of publication %s: %w", pub, err)
		}
		o.rels[name] = rel
	}
	return o, rows.Err()
}

// readIdentities reads the replica identity of each table.
func readIdentities(ctx context.Context, q Querier, tables []string) (map[string]replication.Identity, error) {
	out := map[string]replication.Identity{}
	if len(tables) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, replication.IdentityQuery(tables))
	if err != nil {
		return nil, fmt.Errorf("read replica identities: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, kind, indexed string
		if err := rows.Scan(&name, &kind, &indexed); err != nil {
			return nil, fmt.Errorf("read replica identities: %w", err)
		}
		out[name] = replication.ParseIdentity(name, kind, indexed)
	}
	return out, rows.Err()
}

func queryRow(ctx context.Context, q Querier, sql string, args []any, dest ...any) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Err()
}
