package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

// rulesExplain prints what a change would do under a rules file, using the
// daemon's own evaluation: offline from --old/--new rows, or with --peek
// for the transactions waiting in a slot.
func rulesExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	table := fs.String("table", "", "table, schema-qualified (unqualified: public)")
	op := fs.String("op", "", "insert, update, delete or truncate")
	oldRow := fs.String("old", "", "the old row as a JSON object (update, delete); its presence means REPLICA IDENTITY FULL")
	newRow := fs.String("new", "", "the new row as a JSON object (insert, update)")
	key := fs.String("key", "id", "primary key columns, comma-separated")
	asJSON := fs.Bool("json", false, "print JSON")
	peek := fs.Bool("peek", false, "explain the transactions waiting in a slot (needs CDCD_DATABASE_URL; consumes nothing)")
	slot := fs.String("slot", envOr("CDCD_SLOT", "cdcd"), "slot to peek")
	publication := fs.String("publication", envOr("CDCD_PUBLICATION", "cdcd"), "publication to decode with")
	limit := fs.Int("limit", 10, "most transactions to peek (0: all)")
	if err := fs.Parse(interspersed(fs, args)); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "cdcd rules explain: too many arguments\n")
		return exitUsage
	}
	path := rulesPath(fs.Args())
	rs, err := rules.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	if *peek {
		return explainPeek(rs, *slot, *publication, *limit, *asJSON, stdout, stderr)
	}
	c, err := syntheticChange(*table, *op, *oldRow, *newRow, strings.Split(*key, ","))
	if err != nil {
		fmt.Fprintln(stderr, "cdcd rules explain:", err)
		return exitUsage
	}
	b := rs.Begin(replication.Begin{Xid: 0})
	b.Add(c)
	p := b.Plan(replication.Commit{}) // no LSN or time: the output is deterministic
	if *asJSON {
		writeJSON(stdout, planJSON(p, c.Rel.Table(), c.Op.String()))
		return exitOK
	}
	fmt.Fprintf(stdout, "%s of %s:\n", c.Op, c.Rel.Table())
	printPlan(stdout, p, "  ")
	return exitOK
}

func explainPeek(rs *rules.Rules, slot, publication string, limit int, asJSON bool, stdout, stderr io.Writer) int {
	dbURL := os.Getenv("CDCD_DATABASE_URL")
	if dbURL == "" {
		fmt.Fprintln(stderr, "cdcd rules explain --peek: CDCD_DATABASE_URL is required")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	txs, err := replication.Peek(ctx, dbURL, slot, publication, limit,
		func(b replication.Begin) *rules.Builder { return rs.Begin(b) })
	if err != nil {
		fmt.Fprintln(stderr, "cdcd rules explain --peek:", redact(err.Error(), dbURL))
		return exitFailure
	}
	var all []any
	for _, c := range txs {
		p := c.Tx.Plan(c.Commit)
		if asJSON {
			all = append(all, planJSON(p, "", ""))
			continue
		}
		fmt.Fprintf(stdout, "transaction %d, commit %s at %s, %d changes:\n", p.Xid, p.CommitLSN, p.CommitTime.UTC().Format(time.RFC3339Nano), p.Changes)
		printPlan(stdout, p, "  ")
	}
	if asJSON {
		writeJSON(stdout, all)
	} else if len(txs) == 0 {
		fmt.Fprintf(stdout, "slot %s has no pending transactions\n", slot)
	}
	return exitOK
}

// syntheticChange builds the change a row edit would stream.
func syntheticChange(table, op, oldJSON, newJSON string, key []string) (*replication.Change, error) {
	if table == "" || op == "" {
		return nil, fmt.Errorf("--table and --op are required")
	}
	o, ok := replication.ParseOp(op)
	if !ok {
		return nil, fmt.Errorf("--op %q: one of %s", op, strings.Join(rules.Operations, ", "))
	}
	schema, name, found := strings.Cut(table, ".")
	if !found {
		schema, name = "public", table
	}
	oldRow, oldCols, err := parseRow("--old", oldJSON)
	if err != nil {
		return nil, err
	}
	newRow, newCols, err := parseRow("--new", newJSON)
	if err != nil {
		return nil, err
	}
	switch {
	case (o == replication.OpInsert || o == replication.OpUpdate) && newRow == nil:
		return nil, fmt.Errorf("--new is required for %s", op)
	case o == replication.OpDelete && oldRow == nil:
		return nil, fmt.Errorf("--old is required for delete")
	}
	cols := oldCols
	for _, c := range newCols {
		if !slices.Contains(cols, c) {
			cols = append(cols, c)
		}
	}
	rel := &replication.Relation{Namespace: schema, Name: name, ReplicaIdentity: 'd'}
	if oldRow != nil {
		rel.ReplicaIdentity = 'f'
	}
	for i, c := range cols {
		isKey := slices.Contains(key, c)
		rel.Columns = append(rel.Columns, replication.Column{Name: c, Identity: isKey || rel.ReplicaIdentity == 'f'})
		if isKey {
			rel.PrimaryKey = append(rel.PrimaryKey, i)
		}
	}
	tuple := func(kind replication.TupleKind, row map[string]*string) replication.Tuple {
		t := replication.Tuple{Kind: kind, Values: make([]replication.Value, len(cols))}
		for i, c := range cols {
			v, ok := row[c]
			switch {
			case !ok && kind == replication.NewTuple && oldRow != nil:
				t.Values[i] = replication.Value{Kind: replication.Unchanged}
			case !ok:
				t.Values[i] = replication.Value{Kind: replication.Absent}
			case v == nil:
				t.Values[i] = replication.Value{Kind: replication.Null}
			default:
				t.Values[i] = replication.Value{Kind: replication.Text, Data: []byte(*v)}
			}
		}
		return t
	}
	c := &replication.Change{Op: o, Rel: rel}
	if oldRow != nil && o != replication.OpInsert && o != replication.OpTruncate {
		c.Old = tuple(replication.OldTuple, oldRow)
	}
	if newRow != nil && (o == replication.OpInsert || o == replication.OpUpdate) {
		c.New = tuple(replication.NewTuple, newRow)
	}
	return c, nil
}

// parseRow reads a JSON object into column text values (nil for NULL), in
// the order the columns appear.
func parseRow(flagName, s string) (map[string]*string, []string, error) {
	if s == "" {
		return nil, nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, nil, fmt.Errorf("%s: not a JSON object: %v", flagName, err)
	}
	// Column order as written.
	var order []string
	if _, err := dec.Token(); err == nil {
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			order = append(order, tok.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				break
			}
		}
	}
	row := make(map[string]*string, len(raw))
	for k, v := range raw {
		switch {
		case string(v) == "null":
			row[k] = nil
		case len(v) > 0 && v[0] == '"':
			var s string
			_ = json.Unmarshal(v, &s)
			row[k] = &s
		case string(v) == "true" || string(v) == "false":
			s := string(v[:1]) // Postgres text form: t, f
			row[k] = &s
		default:
			var buf bytes.Buffer
			_ = json.Compact(&buf, v)
			s := buf.String()
			row[k] = &s
		}
	}
	return row, order, nil
}

func printPlan(w io.Writer, p *rules.Plan, indent string) {
	if p.Empty() {
		fmt.Fprintf(w, "%snothing to invalidate\n", indent)
		return
	}
	for _, k := range p.Keys {
		from := "the " + k.From + " row"
		if k.From == rules.FromLiteral {
			from = "a literal key"
		}
		fmt.Fprintf(w, "%sUNLINK %s\t(section %s, rule %s, %s)\n", indent, k.Key, k.Section, k.Rule, from)
	}
	for _, pt := range p.Patterns {
		fmt.Fprintf(w, "%sSCAN+UNLINK %s\t(section %s, rule %s, because %s)\n", indent, pt.Pattern, pt.Section, pt.Rule, pt.Reason)
	}
	lsn := "<commit LSN>"
	if p.CommitLSN != 0 {
		lsn = p.CommitLSN.String()
	}
	for _, r := range p.Revisions {
		what := r.Key
		if r.IsPattern {
			what = "every key matching " + r.Key
		}
		fmt.Fprintf(w, "%sSET %s = %s\t(revision of section %s)\n", indent, what, lsn, r.Section)
	}
	for _, m := range p.Messages {
		fmt.Fprintf(w, "%sPUBLISH %s %s\n", indent, m.Channel, m.Payload)
	}
	for _, v := range p.Violations {
		fmt.Fprintf(w, "%sVIOLATION of %s (%s): %s\n", indent, v.Invariant, v.Severity, v.Message)
		for _, c := range v.Changed {
			fmt.Fprintf(w, "%s  changed %s: %s -> %s\n", indent, c.Column, showValue(c.Old), showValue(c.New))
		}
		for _, c := range v.Required {
			fmt.Fprintf(w, "%s  unchanged %s: %s\n", indent, c.Column, showValue(c.New))
		}
	}
}

func showValue(v *string) string {
	if v == nil {
		return "NULL"
	}
	return *v
}

type jsonPlan struct {
	Table      string            `json:"table,omitempty"`
	Op         string            `json:"op,omitempty"`
	Xid        uint32            `json:"xid,omitempty"`
	CommitLSN  string            `json:"commit_lsn,omitempty"`
	Keys       []rules.Key       `json:"keys"`
	Patterns   []rules.Pattern   `json:"patterns"`
	Revisions  []rules.Revision  `json:"revisions"`
	Messages   []jsonMessage     `json:"messages"`
	Violations []rules.Violation `json:"violations"`
}

// jsonMessage shows a channel message's payload as JSON, not as bytes.
type jsonMessage struct {
	Channel string          `json:"channel"`
	Payload json.RawMessage `json:"payload"`
}

func planJSON(p *rules.Plan, table, op string) jsonPlan {
	out := jsonPlan{Table: table, Op: op, Xid: p.Xid, Keys: nonNil(p.Keys), Patterns: nonNil(p.Patterns),
		Revisions: nonNil(p.Revisions), Messages: []jsonMessage{}, Violations: nonNil(p.Violations)}
	if p.CommitLSN != pglogrepl.LSN(0) {
		out.CommitLSN = p.CommitLSN.String()
	}
	for _, m := range p.Messages {
		out.Messages = append(out.Messages, jsonMessage{m.Channel, m.Payload})
	}
	return out
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
