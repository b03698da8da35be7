package rules_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

const evalRules = `{
  "sections": {
    "core":    { "keys": ["core"], "revision": "rev:core" },
    "run":     { "keys": ["run:{run_id}"], "channel": "events" },
    "fn":      { "keys": ["fn:{id}:v{version}"], "revision": "fn:{id}:rev" },
    "scratch": { "keys": ["scratch:{id}"] }
  },
  "rules": [
    { "name": "core", "tables": ["public.topics"], "invalidate": ["core"] },
    { "name": "title", "tables": ["public.tasks"], "operations": ["update"], "columns": ["title"], "invalidate": ["core"] },
    { "name": "runs", "tables": ["public.runs"], "invalidate": ["run"] },
    { "name": "fn", "tables": ["public.fn"], "operations": ["insert", "delete"], "invalidate": ["fn"] }
  ],
  "invariants": [
    { "name": "bump", "table": "public.fn", "when_changed": ["a", "b"], "require_changed": ["version"],
      "severity": "error", "message": "bump it", "invalidate": ["scratch"] }
  ]
}`

// rel builds a relation; identity columns are marked with a trailing '*'.
func rel(id uint32, table string, identity byte, cols ...string) *replication.Relation {
	schema, name, _ := strings.Cut(table, ".")
	r := &replication.Relation{ID: id, Namespace: schema, Name: name, ReplicaIdentity: identity}
	for i, c := range cols {
		key := strings.HasSuffix(c, "*")
		r.Columns = append(r.Columns, replication.Column{Name: strings.TrimSuffix(c, "*"), Identity: key || identity == 'f'})
		if key {
			r.PrimaryKey = append(r.PrimaryKey, i)
		}
	}
	return r
}

// tup builds a tuple: "NULL" is SQL NULL, "~" an unchanged TOAST value,
// anything else text.
func tup(kind replication.TupleKind, vals ...string) replication.Tuple {
	t := replication.Tuple{Kind: kind}
	for _, v := range vals {
		switch v {
		case "NULL":
			t.Values = append(t.Values, replication.Value{Kind: replication.Null})
		case "~":
			t.Values = append(t.Values, replication.Value{Kind: replication.Unchanged})
		default:
			t.Values = append(t.Values, replication.Value{Kind: replication.Text, Data: []byte(v)})
		}
	}
	return t
}

var (
	topics  = rel(1, "public.topics", 'd', "id*", "title")
	tasks   = rel(2, "public.tasks", 'f', "id*", "title", "notes")
	runsF   = rel(3, "public.runs", 'f', "id*", "run_id")
	runsD   = rel(4, "public.runs", 'd', "id*", "run_id")
	fnF     = rel(5, "public.fn", 'f', "id*", "a", "b", "version", "note")
	runsMis = rel(6, "public.runs", 'd', "id*", "other")
)

func ins(r *replication.Relation, vals ...string) *replication.Change {
	return &replication.Change{Op: replication.OpInsert, Rel: r, New: tup(replication.NewTuple, vals...)}
}

func upd(r *replication.Relation, old []string, vals ...string) *replication.Change {
	c := &replication.Change{Op: replication.OpUpdate, Rel: r, New: tup(replication.NewTuple, vals...)}
	if old != nil {
		c.Old = tup(replication.OldTuple, old...)
	}
	return c
}

func del(r *replication.Relation, old ...string) *replication.Change {
	kind := replication.KeyTuple
	if r.ReplicaIdentity == 'f' {
		kind = replication.OldTuple
	}
	return &replication.Change{Op: replication.OpDelete, Rel: r, Old: tup(kind, old...)}
}

func plan(t *testing.T, changes ...*replication.Change) *rules.Plan {
	t.Helper()
	f, err := rules.Parse("eval.json", []byte(evalRules))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	b := rs.Begin(replication.Begin{Xid: 42})
	for _, c := range changes {
		b.Add(c)
	}
	return b.Plan(replication.Commit{CommitLSN: 0x16B3748, EndLSN: 0x16B3800, CommitTime: time.Unix(1700000000, 0)})
}

func keys(p *rules.Plan) string {
	var out []string
	for _, k := range p.Keys {
		out = append(out, k.Key+"<"+k.From)
	}
	for _, pt := range p.Patterns {
		out = append(out, "~"+pt.Pattern+"<"+pt.Reason)
	}
	return strings.Join(out, " ")
}

func TestEvaluateKeys(t *testing.T) {
	cases := []struct {
		name    string
		changes []*replication.Change
		want    string
	}{
		{"insert literal", []*replication.Change{ins(topics, "1", "t")}, "core<literal"},
		{"delete literal", []*replication.Change{del(topics, "1")}, "core<literal"},
		{"insert template", []*replication.Change{ins(runsF, "1", "7")}, "run:7<new"},
		{"delete template from old row", []*replication.Change{del(runsF, "1", "7")}, "run:7<old"},
		{"update outside columns (FULL)", []*replication.Change{upd(tasks, []string{"1", "a", "n"}, "1", "a", "m")}, ""},
		{"update inside columns (FULL)", []*replication.Change{upd(tasks, []string{"1", "a", "n"}, "1", "b", "n")}, "core<literal"},
		{"column filter without old row matches", []*replication.Change{upd(rel(7, "public.tasks", 'd', "id*", "title", "notes"), nil, "1", "a", "m")}, "core<literal"},
		{"moved row (FULL)", []*replication.Change{upd(runsF, []string{"1", "1"}, "1", "2")}, "run:2<new run:1<old"},
		{"unmoved row (FULL)", []*replication.Change{upd(runsF, []string{"1", "1"}, "1", "1")}, "run:1<new"},
		{"moved row (DEFAULT): pattern", []*replication.Change{upd(runsD, nil, "1", "2")}, "run:2<new ~run:*<old_row_unknown"},
		{"unchanged TOAST with old row", []*replication.Change{upd(runsF, []string{"1", "5"}, "1", "~")}, "run:5<new"},
		{"unchanged TOAST without old row", []*replication.Change{upd(runsD, nil, "1", "~")}, "~run:*<value_unknown"},
		{"NULL renders empty", []*replication.Change{ins(runsF, "1", "NULL")}, "run:<new"},
		{"missing column: pattern", []*replication.Change{ins(runsMis, "1", "x")}, "~run:*<missing_column"},
		{"operations filter", []*replication.Change{upd(fnF, []string{"1", "a", "b", "1", "n"}, "1", "a", "b", "1", "m")}, ""},
		{"unrelated table", []*replication.Change{ins(rel(9, "public.other", 'd', "id*"), "1")}, ""},
		{"each key once", func() []*replication.Change {
			var cs []*replication.Change
			for i := 0; i < 10000; i++ {
				cs = append(cs, ins(runsF, fmt.Sprint(i), fmt.Sprint(i%3)))
			}
			return cs
		}(), "run:0<new run:1<new run:2<new"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := keys(plan(t, c.changes...)); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestEvaluateTruncate(t *testing.T) {
	p := plan(t, &replication.Change{Op: replication.OpTruncate, Rel: runsF}, &replication.Change{Op: replication.OpTruncate, Rel: topics})
	if got := keys(p); got != "~run:*<truncate core<literal" && got != "core<literal ~run:*<truncate" {
		t.Errorf("got %q", got)
	}
}

func TestEvaluateRevisionsAndMessages(t *testing.T) {
	p := plan(t, ins(topics, "1", "t"), ins(runsF, "1", "7"), ins(runsF, "2", "8"))
	if len(p.Revisions) != 1 || p.Revisions[0].Key != "rev:core" || p.Revisions[0].IsPattern {
		t.Errorf("revisions %+v", p.Revisions)
	}
	if len(p.Messages) != 1 || p.Messages[0].Channel != "events" {
		t.Fatalf("messages %+v", p.Messages)
	}
	var m map[string]any
	if err := json.Unmarshal(p.Messages[0].Payload, &m); err != nil {
		t.Fatal(err)
	}
	if m["section"] != "run" || m["lsn"] != "0/16B3748" || fmt.Sprint(m["keys"]) != "[run:7 run:8]" || m["commit_time"] != "2023-11-14T22:13:20Z" {
		t.Errorf("payload %s", p.Messages[0].Payload)
	}
	if p.Empty() || plan(t).Empty() == false {
		t.Error("Empty is wrong")
	}
}

func TestEvaluateInvariants(t *testing.T) {
	old := []string{"1", "a1", "b1", "3", "n"}
	cases := []struct {
		name    string
		changes []*replication.Change
		changed []string // "col:old>new"
	}{
		{"no bump", []*replication.Change{upd(fnF, old, "1", "a2", "b1", "3", "n")}, []string{"a:a1>a2"}},
		{"two columns, one violation", []*replication.Change{upd(fnF, old, "1", "a2", "b2", "3", "n")}, []string{"a:a1>a2", "b:b1>b2"}},
		{"bumped", []*replication.Change{upd(fnF, old, "1", "a2", "b1", "4", "n")}, nil},
		{"unrelated column", []*replication.Change{upd(fnF, old, "1", "a1", "b1", "3", "m")}, nil},
		{"NULL to value", []*replication.Change{upd(fnF, []string{"1", "NULL", "b1", "3", "n"}, "1", "a1", "b1", "3", "n")}, []string{"a:NULL>a1"}},
		{"value to NULL", []*replication.Change{upd(fnF, old, "1", "NULL", "b1", "3", "n")}, []string{"a:a1>NULL"}},
		{"unchanged TOAST", []*replication.Change{upd(fnF, old, "1", "~", "~", "3", "m")}, nil},
		{"bump in a second statement", []*replication.Change{
			upd(fnF, old, "1", "a2", "b1", "3", "n"),
			upd(fnF, []string{"1", "a2", "b1", "3", "n"}, "1", "a2", "b1", "4", "n")}, nil},
		{"changed back", []*replication.Change{
			upd(fnF, old, "1", "a2", "b1", "3", "n"),
			upd(fnF, []string{"1", "a2", "b1", "3", "n"}, "1", "a1", "b1", "3", "n")}, nil},
		{"inserted then updated", []*replication.Change{
			ins(fnF, "9", "a", "b", "1", "n"),
			upd(fnF, []string{"9", "a", "b", "1", "n"}, "9", "x", "b", "1", "n")}, nil},
		{"no old row: cannot tell", []*replication.Change{upd(rel(8, "public.fn", 'd', "id*", "a", "b", "version"), nil, "1", "a2", "b", "3")}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(t, c.changes...)
			if c.changed == nil {
				if len(p.Violations) != 0 {
					t.Fatalf("violations %+v", p.Violations)
				}
				return
			}
			if len(p.Violations) != 1 {
				t.Fatalf("%d violations, want 1", len(p.Violations))
			}
			v := p.Violations[0]
			var got []string
			for _, ch := range v.Changed {
				got = append(got, ch.Column+":"+show(ch.Old)+">"+show(ch.New))
			}
			if !slices.Equal(got, c.changed) {
				t.Errorf("changed %v, want %v", got, c.changed)
			}
			if v.Invariant != "bump" || v.Severity != "error" || v.Message != "bump it" || v.Table != "public.fn" ||
				v.Xid != 42 || v.LSN != "0/16B3748" || len(v.PrimaryKey) != 1 || *v.PrimaryKey[0].Value != "1" ||
				len(v.Required) != 1 || *v.Required[0].Old != "3" || *v.Required[0].New != "3" {
				t.Errorf("violation %+v", v)
			}
			if !strings.Contains(keys(p), "scratch:1<") {
				t.Errorf("the invariant's section was not invalidated: %s", keys(p))
			}
		})
	}
}

func show(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func TestEscalationBoundsKeys(t *testing.T) {
	f, err := rules.Parse("eval.json", []byte(`{"sections": {"run": {"keys": ["lit", "run:{run_id}"]}},
		"rules": [{"name": "runs", "tables": ["public.runs"], "invalidate": ["run"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	rs.MaxTxKeys = 100
	b := rs.Begin(replication.Begin{Xid: 1})
	for i := 0; i < 1000; i++ {
		b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i)))
	}
	p := b.Plan(replication.Commit{})
	if got := keys(p); got != "lit<literal ~run:*<escalated" {
		t.Errorf("got %q", got)
	}
	b = rs.Begin(replication.Begin{Xid: 2})
	for i := 0; i < 99; i++ {
		b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i)))
	}
	if p := b.Plan(replication.Commit{}); len(p.Keys) != 100 || len(p.Patterns) != 0 {
		t.Errorf("under the limit: %d keys, %d patterns", len(p.Keys), len(p.Patterns))
	}
}
