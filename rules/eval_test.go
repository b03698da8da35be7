package rules_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

const evalRules = `{
  "sections": {
    "core":    { "keys": ["summary:core"], "revision": "rev:core" },
    "task":    { "keys": ["task:{id}", "task:{id}:{status}"] },
    "run":     { "keys": ["nodb:{run_id}:climate"], "revision": "rev:run:{run_id}", "channel": "cdcd:invalidations" },
    "ev":      { "keys": ["ev:{kind}", "ev:all"], "channel": "cdcd:events" },
    "pair":    { "keys": ["pair:{a}:{b}:{a}"] },
    "renamed": { "keys": ["renamed:{old_name}", "renamed:all"], "revision": "rev:renamed:{old_name}" },
    "impact":  { "keys": ["impact:{id}:v{version}"], "revision": "impact:{id}:rev" },
    "quiet":   { "keys": ["quiet:{id}"] }
  },
  "rules": [
    { "name": "topics", "tables": ["topics"], "invalidate": ["core"] },
    { "name": "task-title", "tables": ["public.tasks"], "operations": ["update"], "columns": ["title", "status"], "invalidate": ["core"] },
    { "name": "task-row", "tables": ["public.tasks"], "operations": ["insert", "delete"], "invalidate": ["task"] },
    { "name": "climate-run", "tables": ["public.runs"], "invalidate": ["run"] },
    { "name": "events-a", "tables": ["public.events"], "invalidate": ["ev"] },
    { "name": "events-b", "tables": ["public.events"], "operations": ["insert"], "invalidate": ["ev"] },
    { "name": "pairs", "tables": ["public.pairs"], "invalidate": ["pair"] },
    { "name": "renamed", "tables": ["public.renamed"], "operations": ["update"], "columns": ["old_name"], "invalidate": ["renamed"] }
  ],
  "invariants": [
    { "name": "bump", "table": "public.impact_functions", "when_changed": ["mdd_x", "mdd_y"],
      "require_changed": ["version"], "severity": "error", "message": "bump it", "invalidate": ["impact"] },
    { "name": "quiet", "table": "public.quiet", "when_changed": ["a"], "require_changed": ["v"], "invalidate": ["quiet"] }
  ]
}`

// rel builds a relation. A trailing '*' marks a primary-key column, which
// is an identity column; under REPLICA IDENTITY FULL ('f') every column is.
func rel(id uint32, table string, identity byte, cols ...string) *replication.Relation {
	schema, name, _ := strings.Cut(table, ".")
	r := &replication.Relation{ID: id, Namespace: schema, Name: name, ReplicaIdentity: identity}
	for i, c := range cols {
		key := strings.HasSuffix(c, "*")
		r.Columns = append(r.Columns, replication.Column{Name: strings.TrimSuffix(c, "*"), TypeOID: 25, Identity: key || identity == replication.IdentityFull})
		if key {
			r.PrimaryKey = append(r.PrimaryKey, i)
		}
	}
	return r
}

var (
	topics   = rel(1, "public.topics", 'd', "id*", "title")
	tasks    = rel(2, "public.tasks", 'f', "id*", "title", "status", "notes")
	tasksD   = rel(3, "public.tasks", 'd', "id*", "title", "status", "notes")
	runsF    = rel(4, "public.runs", 'f', "id*", "run_id", "payload")
	runsD    = rel(5, "public.runs", 'd', "id*", "run_id", "payload")
	runsK    = rel(6, "public.runs", 'd', "id", "run_id*", "payload") // run_id is the key
	events   = rel(7, "public.events", 'f', "id*", "kind")
	pairs    = rel(8, "public.pairs", 'f', "id*", "a", "b")
	renamed  = rel(9, "public.renamed", 'f', "id*", "new_name") // old_name was renamed
	fnF      = rel(10, "public.impact_functions", 'f', "id*", "mdd_x", "mdd_y", "version", "note")
	fnD      = rel(11, "public.impact_functions", 'd', "id*", "mdd_x", "mdd_y", "version", "note")
	appRuns  = rel(12, "app.runs", 'f', "id*", "run_id", "payload")
	other    = rel(13, "public.other", 'd', "id*", "run_id")
	quiet    = rel(14, "public.quiet", 'f', "id*", "a", "v")
	fnNoPK   = rel(15, "public.impact_functions", 'f', "id", "mdd_x", "mdd_y", "version", "note")
	fnTwoKey = rel(16, "public.impact_functions", 'f', "tenant*", "id*", "mdd_x", "mdd_y", "version")
)

// tup builds a tuple: "NULL" is SQL NULL, "~" an unchanged TOASTed value,
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

// keyTuple is the old tuple pgoutput sends when the replica identity is
// not FULL: identity columns, and NULL for the rest.
func keyTuple(r *replication.Relation, vals ...string) replication.Tuple {
	t := tup(replication.KeyTuple, vals...)
	for i, c := range r.Columns {
		if !c.Identity {
			t.Values[i] = replication.Value{Kind: replication.Null}
		}
	}
	return t
}

func ins(r *replication.Relation, vals ...string) *replication.Change {
	return &replication.Change{Op: replication.OpInsert, Rel: r, New: tup(replication.NewTuple, vals...)}
}

// upd is an UPDATE; old nil means no old tuple (the default identity with
// the key unchanged), otherwise the whole old row (FULL).
func upd(r *replication.Relation, old []string, vals ...string) *replication.Change {
	c := &replication.Change{Op: replication.OpUpdate, Rel: r, New: tup(replication.NewTuple, vals...)}
	if old != nil {
		c.Old = tup(replication.OldTuple, old...)
	}
	return c
}

// updKey is an UPDATE that changed the key under the default identity.
func updKey(r *replication.Relation, old []string, vals ...string) *replication.Change {
	c := upd(r, nil, vals...)
	c.Old = keyTuple(r, old...)
	return c
}

func del(r *replication.Relation, old ...string) *replication.Change {
	if r.ReplicaIdentity == replication.IdentityFull {
		return &replication.Change{Op: replication.OpDelete, Rel: r, Old: tup(replication.OldTuple, old...)}
	}
	return &replication.Change{Op: replication.OpDelete, Rel: r, Old: keyTuple(r, old...)}
}

func truncate(r *replication.Relation) *replication.Change {
	return &replication.Change{Op: replication.OpTruncate, Rel: r}
}

func compile(t testing.TB, src string, opts ...rules.Option) *rules.Rules {
	t.Helper()
	f, err := rules.Parse("eval.json", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Compile(f, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

var (
	begin      = replication.Begin{Xid: 42, FinalLSN: pglogrepl.LSN(0x16B3748), CommitTime: commitTime}
	commit     = replication.Commit{Xid: 42, CommitLSN: pglogrepl.LSN(0x16B3748), EndLSN: pglogrepl.LSN(0x16B3778), CommitTime: commitTime}
	commitTime = time.Date(2023, 11, 14, 23, 13, 20, 123456789, time.FixedZone("CET", 3600))
)

func evaluate(rs *rules.Rules, changes ...*replication.Change) *rules.Plan {
	b := rs.Begin(begin)
	for _, c := range changes {
		b.Add(c)
	}
	return b.Plan(commit)
}

func plan(t *testing.T, changes ...*replication.Change) *rules.Plan {
	t.Helper()
	return evaluate(compile(t, evalRules), changes...)
}

func keyList(p *rules.Plan) []string {
	var out []string
	for _, k := range p.Keys {
		out = append(out, fmt.Sprintf("%s %s/%s/%s", k.Key, k.Section, k.Rule, k.From))
	}
	return out
}

func patternList(p *rules.Plan) []string {
	var out []string
	for _, pt := range p.Patterns {
		out = append(out, fmt.Sprintf("%s %s/%s/%s", pt.Pattern, pt.Section, pt.Rule, pt.Reason))
	}
	return out
}

func revisionList(p *rules.Plan) []string {
	var out []string
	for _, r := range p.Revisions {
		s := r.Key + " " + r.Section
		if r.IsPattern {
			s += " (pattern)"
		}
		out = append(out, s)
	}
	return out
}

func repeat(n int, f func(i int) *replication.Change) []*replication.Change {
	out := make([]*replication.Change, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

func TestEvaluate(t *testing.T) {
	type L = []string
	type C = []*replication.Change
	cases := []struct {
		name      string
		changes   C
		keys      L // "key section/rule/from"
		patterns  L // "pattern section/rule/reason"
		revisions L // "key section [(pattern)]"
	}{
		{name: "insert: the key from the new row",
			changes:   C{ins(runsF, "1", "7", "p")},
			keys:      L{"nodb:7:climate run/climate-run/new"},
			revisions: L{"rev:run:7 run"}},
		{name: "delete: the key from the old row",
			changes:   C{del(runsF, "1", "7", "p")},
			keys:      L{"nodb:7:climate run/climate-run/old"},
			revisions: L{"rev:run:7 run"}},
		{name: "delete under the default identity: a non-key column is unknown",
			changes:   C{del(runsD, "1", "7", "p")},
			patterns:  L{"nodb:*:climate run/climate-run/old_row_unknown"},
			revisions: L{"rev:run:* run (pattern)"}},
		{name: "delete under the default identity: the key column is known",
			changes:   C{del(runsK, "1", "7", "p")},
			keys:      L{"nodb:7:climate run/climate-run/old"},
			revisions: L{"rev:run:7 run"}},
		{name: "update: template column unchanged, one key",
			changes:   C{upd(runsF, L{"1", "7", "p"}, "1", "7", "q")},
			keys:      L{"nodb:7:climate run/climate-run/new"},
			revisions: L{"rev:run:7 run"}},
		{name: "update: a row that moved makes both keys stale",
			changes:   C{upd(runsF, L{"1", "7", "p"}, "1", "8", "p")},
			keys:      L{"nodb:8:climate run/climate-run/new", "nodb:7:climate run/climate-run/old"},
			revisions: L{"rev:run:8 run", "rev:run:7 run"}},
		{name: "update: moved from NULL",
			changes:   C{upd(runsF, L{"1", "NULL", "p"}, "1", "8", "p")},
			keys:      L{"nodb:8:climate run/climate-run/new", "nodb::climate run/climate-run/old"},
			revisions: L{"rev:run:8 run", "rev:run: run"}},
		{name: "NULL renders as the empty string",
			changes:   C{ins(runsF, "1", "NULL", "p")},
			keys:      L{"nodb::climate run/climate-run/new"},
			revisions: L{"rev:run: run"}},
		{name: "literal key and revision",
			changes:   C{ins(topics, "1", "t")},
			keys:      L{"summary:core core/topics/literal"},
			revisions: L{"rev:core core"}},
		{name: "literal key on delete",
			changes:   C{del(topics, "1", "t")},
			keys:      L{"summary:core core/topics/literal"},
			revisions: L{"rev:core core"}},
		{name: "literal key on truncate",
			changes:   C{truncate(topics)},
			keys:      L{"summary:core core/topics/literal"},
			revisions: L{"rev:core core"}},
		{name: "FULL identity: an update outside the rule's columns matches nothing",
			changes: C{upd(tasks, L{"1", "t", "open", "n"}, "1", "t", "open", "m")}},
		{name: "FULL identity: an update of a listed column matches",
			changes:   C{upd(tasks, L{"1", "t", "open", "n"}, "1", "u", "open", "n")},
			keys:      L{"summary:core core/task-title/literal"},
			revisions: L{"rev:core core"}},
		{name: "FULL identity: any listed column will do",
			changes:   C{upd(tasks, L{"1", "t", "open", "n"}, "1", "t", "done", "n")},
			keys:      L{"summary:core core/task-title/literal"},
			revisions: L{"rev:core core"}},
		{name: "FULL identity: NULL to a value is a change",
			changes:   C{upd(tasks, L{"1", "NULL", "open", "n"}, "1", "t", "open", "n")},
			keys:      L{"summary:core core/task-title/literal"},
			revisions: L{"rev:core core"}},
		{name: "FULL identity: NULL to NULL is not",
			changes: C{upd(tasks, L{"1", "NULL", "open", "n"}, "1", "NULL", "open", "m")}},
		{name: "an unchanged TOASTed listed column did not change",
			changes: C{upd(tasks, L{"1", "t", "open", "n"}, "1", "~", "open", "m")}},
		{name: "default identity: a column filter that cannot tell matches",
			changes:   C{upd(tasksD, nil, "1", "t", "open", "m")},
			keys:      L{"summary:core core/task-title/literal"},
			revisions: L{"rev:core core"}},
		{name: "default identity: new key, and the pattern for the unknown old key",
			changes:   C{upd(runsD, nil, "1", "8", "p")},
			keys:      L{"nodb:8:climate run/climate-run/new"},
			patterns:  L{"nodb:*:climate run/climate-run/old_row_unknown"},
			revisions: L{"rev:run:8 run", "rev:run:* run (pattern)"}},
		{name: "default identity: a key column without an old tuple did not change",
			changes:   C{upd(runsK, nil, "1", "7", "p")},
			keys:      L{"nodb:7:climate run/climate-run/new"},
			revisions: L{"rev:run:7 run"}},
		{name: "default identity: a changed key comes in the key tuple",
			changes:   C{updKey(runsK, L{"1", "7", "p"}, "1", "8", "p")},
			keys:      L{"nodb:8:climate run/climate-run/new", "nodb:7:climate run/climate-run/old"},
			revisions: L{"rev:run:8 run", "rev:run:7 run"}},
		{name: "unchanged TOAST with the old row: the old value",
			changes:   C{upd(runsF, L{"1", "7", "p"}, "1", "~", "q")},
			keys:      L{"nodb:7:climate run/climate-run/new"},
			revisions: L{"rev:run:7 run"}},
		{name: "unchanged TOAST without the old row: the pattern",
			changes:   C{upd(runsD, nil, "1", "~", "q")},
			patterns:  L{"nodb:*:climate run/climate-run/value_unknown"},
			revisions: L{"rev:run:* run (pattern)"}},
		{name: "truncate: the pattern",
			changes:   C{truncate(runsF)},
			patterns:  L{"nodb:*:climate run/climate-run/truncate"},
			revisions: L{"rev:run:* run (pattern)"}},
		{name: "truncate twice: the pattern once",
			changes:   C{truncate(runsF), truncate(runsD)},
			patterns:  L{"nodb:*:climate run/climate-run/truncate"},
			revisions: L{"rev:run:* run (pattern)"}},
		{name: "missing column: the pattern, and the column filter matches",
			changes:   C{upd(renamed, L{"1", "a"}, "1", "a")},
			keys:      L{"renamed:all renamed/renamed/literal"},
			patterns:  L{"renamed:* renamed/renamed/missing_column"},
			revisions: L{"rev:renamed:* renamed (pattern)"}},
		{name: "10,000 changes to the same key: one key",
			changes: repeat(10000, func(i int) *replication.Change {
				return upd(runsF, L{fmt.Sprint(i), "7", "p"}, fmt.Sprint(i), "7", "q")
			}),
			keys:      L{"nodb:7:climate run/climate-run/new"},
			revisions: L{"rev:run:7 run"}},
		{name: "10,000 rows over three keys",
			changes:   repeat(10000, func(i int) *replication.Change { return ins(runsF, fmt.Sprint(i), fmt.Sprint(i%3), "p") }),
			keys:      L{"nodb:0:climate run/climate-run/new", "nodb:1:climate run/climate-run/new", "nodb:2:climate run/climate-run/new"},
			revisions: L{"rev:run:0 run", "rev:run:1 run", "rev:run:2 run"}},
		{name: "the same key from two rules: once, from the first",
			changes: C{ins(events, "1", "x")},
			keys:    L{"ev:x ev/events-a/new", "ev:all ev/events-a/literal"}},
		{name: "the same key from an insert and a delete: once",
			changes: C{ins(events, "1", "x"), del(events, "2", "x")},
			keys:    L{"ev:x ev/events-a/new", "ev:all ev/events-a/literal"}},
		{name: "operations: an insert matches the insert rule only",
			changes: C{ins(tasks, "1", "t", "open", "n")},
			keys:    L{"task:1 task/task-row/new", "task:1:open task/task-row/new"}},
		{name: "operations: a delete matches the delete rule only",
			changes: C{del(tasks, "1", "t", "open", "n")},
			keys:    L{"task:1 task/task-row/old", "task:1:open task/task-row/old"}},
		{name: "operations: an update matches the update rule only",
			changes:   C{upd(tasks, L{"1", "t", "open", "n"}, "1", "t", "done", "n")},
			keys:      L{"summary:core core/task-title/literal"},
			revisions: L{"rev:core core"}},
		{name: "operations: a truncate no rule lists matches nothing",
			changes: C{truncate(tasks)}},
		{name: "operations: an update the second rule does not list",
			changes: C{upd(events, L{"1", "x"}, "1", "y")},
			keys:    L{"ev:y ev/events-a/new", "ev:x ev/events-a/old", "ev:all ev/events-a/literal"}},
		{name: "repeated placeholder",
			changes: C{ins(pairs, "1", "x", "y")},
			keys:    L{"pair:x:y:x pair/pairs/new"}},
		{name: "repeated placeholder, moved",
			changes: C{upd(pairs, L{"1", "x", "y"}, "1", "z", "y")},
			keys:    L{"pair:z:y:z pair/pairs/new", "pair:x:y:x pair/pairs/old"}},
		{name: "glob characters in values go into keys as they are",
			changes:   C{ins(runsF, "1", `*?[a]\`, "p")},
			keys:      L{`nodb:*?[a]\:climate run/climate-run/new`},
			revisions: L{`rev:run:*?[a]\ run`}},
		{name: "a table of the same name in another schema",
			changes: C{ins(appRuns, "1", "7", "p")}},
		{name: "a table no rule names",
			changes: C{ins(other, "1", "7"), upd(other, nil, "1", "8"), del(other, "1", "8"), truncate(other)}},
		{name: "an invariant's table, no watched column changed",
			changes: C{upd(fnF, L{"1", "0.1", "0.2", "3", "n"}, "1", "0.1", "0.2", "3", "m")}},
		{name: "keys of several changes in first-seen order",
			changes: C{ins(runsF, "1", "7", "p"), ins(topics, "1", "t"), del(runsF, "2", "8", "p"), ins(runsF, "3", "7", "p")},
			keys: L{"nodb:7:climate run/climate-run/new", "summary:core core/topics/literal",
				"nodb:8:climate run/climate-run/old"},
			revisions: L{"rev:run:7 run", "rev:core core", "rev:run:8 run"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(t, c.changes...)
			if got := keyList(p); !slices.Equal(got, c.keys) {
				t.Errorf("keys\n got %q\nwant %q", got, c.keys)
			}
			if got := patternList(p); !slices.Equal(got, c.patterns) {
				t.Errorf("patterns\n got %q\nwant %q", got, c.patterns)
			}
			if got := revisionList(p); !slices.Equal(got, c.revisions) {
				t.Errorf("revisions\n got %q\nwant %q", got, c.revisions)
			}
			if len(p.Violations) != 0 {
				t.Errorf("violations %+v", p.Violations)
			}
			if p.Changes != len(c.changes) {
				t.Errorf("Changes = %d, want %d", p.Changes, len(c.changes))
			}
			if empty := len(c.keys)+len(c.patterns)+len(c.revisions) == 0; p.Empty() != empty {
				t.Errorf("Empty() = %v, want %v", p.Empty(), empty)
			}
		})
	}
}

func TestEvaluatePlanHeader(t *testing.T) {
	p := plan(t, ins(other, "1", "7"))
	if p.Xid != 42 || p.CommitLSN != 0x16B3748 || p.EndLSN != 0x16B3778 || !p.CommitTime.Equal(commitTime) || p.Changes != 1 {
		t.Errorf("plan header %+v", p)
	}
	if !p.Empty() || p.Keys != nil || p.Patterns != nil || p.Revisions != nil || p.Messages != nil || p.Violations != nil {
		t.Errorf("a change to a table no rule names: %+v", p)
	}
	if p := plan(t); !p.Empty() || p.Changes != 0 {
		t.Errorf("an empty transaction: %+v", p)
	}
	// Each kind of output alone makes a plan non-empty.
	for _, p := range []*rules.Plan{
		{Keys: []rules.Key{{Key: "k"}}},
		{Patterns: []rules.Pattern{{Pattern: "k*"}}},
		{Revisions: []rules.Revision{{Key: "r"}}},
		{Messages: []rules.Message{{Channel: "c"}}},
		{Violations: []rules.Violation{{Invariant: "i"}}},
	} {
		if p.Empty() {
			t.Errorf("Empty() for %+v", p)
		}
	}
	if p := (&rules.Plan{MissingColumns: []rules.MissingColumn{{Rule: "r"}}}); !p.Empty() {
		t.Error("a plan with only missing columns asks nothing of the sinks, so it is empty")
	}
}

func TestEvaluateMissingColumns(t *testing.T) {
	p := plan(t, ins(runsF, "1", "7", "p"), upd(renamed, []string{"1", "a"}, "1", "b"), upd(renamed, []string{"2", "a"}, "2", "b"))
	want := []rules.MissingColumn{{Rule: "renamed", Table: "public.renamed", Column: "old_name"}}
	if !slices.Equal(p.MissingColumns, want) {
		t.Errorf("MissingColumns = %+v, want %+v", p.MissingColumns, want)
	}
	if p := plan(t, ins(runsF, "1", "7", "p")); p.MissingColumns != nil {
		t.Errorf("MissingColumns = %+v for a complete relation", p.MissingColumns)
	}
}

func TestEvaluateMessages(t *testing.T) {
	type payload struct {
		Section    string   `json:"section"`
		Keys       []string `json:"keys"`
		Patterns   []string `json:"patterns"`
		LSN        string   `json:"lsn"`
		CommitTime string   `json:"commit_time"`
	}
	decode := func(t *testing.T, m rules.Message) (payload, map[string]json.RawMessage) {
		t.Helper()
		var p payload
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("payload %s: %v", m.Payload, err)
		}
		if err := json.Unmarshal(m.Payload, &raw); err != nil {
			t.Fatal(err)
		}
		return p, raw
	}

	t.Run("one message per section per transaction, in first-touch order", func(t *testing.T) {
		p := plan(t, ins(events, "1", "x"), ins(runsF, "1", "7", "p"), ins(topics, "1", "t"), ins(runsF, "2", "8", "p"), ins(events, "2", "x"))
		if len(p.Messages) != 2 {
			t.Fatalf("%d messages: %+v", len(p.Messages), p.Messages)
		}
		ev, run := p.Messages[0], p.Messages[1]
		if ev.Channel != "cdcd:events" || ev.Section != "ev" || run.Channel != "cdcd:invalidations" || run.Section != "run" {
			t.Errorf("messages %+v", p.Messages)
		}
		got, raw := decode(t, run)
		want := payload{Section: "run", Keys: []string{"nodb:7:climate", "nodb:8:climate"}, LSN: "0/16B3748", CommitTime: "2023-11-14T22:13:20.123456789Z"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("payload %s, want %+v", run.Payload, want)
		}
		var fields []string
		for k := range raw {
			fields = append(fields, k)
		}
		slices.Sort(fields)
		if !slices.Equal(fields, []string{"commit_time", "keys", "lsn", "section"}) {
			t.Errorf("payload fields %v", fields)
		}
		if got, _ := decode(t, ev); !slices.Equal(got.Keys, []string{"ev:x", "ev:all"}) || got.Section != "ev" {
			t.Errorf("ev payload %s", ev.Payload)
		}
	})

	t.Run("a section invalidated by pattern lists it, and keys is a list", func(t *testing.T) {
		p := plan(t, truncate(runsF))
		if len(p.Messages) != 1 {
			t.Fatalf("messages %+v", p.Messages)
		}
		got, raw := decode(t, p.Messages[0])
		if string(raw["keys"]) != "[]" || !slices.Equal(got.Patterns, []string{"nodb:*:climate"}) {
			t.Errorf("payload %s", p.Messages[0].Payload)
		}
	})

	t.Run("no channel, no message", func(t *testing.T) {
		if p := plan(t, ins(topics, "1", "t"), ins(tasks, "1", "t", "s", "n")); p.Messages != nil {
			t.Errorf("messages %+v", p.Messages)
		}
	})

	t.Run("a section touched without keys still gets its message", func(t *testing.T) {
		rs := compile(t, `{"sections": {"s": {"channel": "c"}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["s"]}]}`)
		p := evaluate(rs, ins(rel(1, "public.t", 'd', "id*"), "1"))
		if len(p.Messages) != 1 || p.Messages[0].Channel != "c" || p.Empty() {
			t.Fatalf("plan %+v", p)
		}
		if got, _ := decode(t, p.Messages[0]); got.Section != "s" || got.Keys == nil || len(got.Keys) != 0 {
			t.Errorf("payload %s", p.Messages[0].Payload)
		}
	})
}

func ptr(s string) *string { return &s }

func TestEvaluateInvariants(t *testing.T) {
	old := []string{"1", "0.1", "0.2", "3", "n"}
	cases := []struct {
		name       string
		changes    []*replication.Change
		violations []rules.Violation // LSN, Xid and CommitTime are checked apart
	}{
		{name: "a watched column changed, the version did not",
			changes: []*replication.Change{upd(fnF, old, "1", "0.5", "0.2", "3", "n")},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_x", Old: ptr("0.1"), New: ptr("0.5")}},
				Required:   []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}}},
		{name: "several watched columns changed: one violation listing all",
			changes: []*replication.Change{upd(fnF, old, "1", "0.5", "0.6", "3", "m")},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed: []rules.ColumnChange{
					{Column: "mdd_x", Old: ptr("0.1"), New: ptr("0.5")},
					{Column: "mdd_y", Old: ptr("0.2"), New: ptr("0.6")}},
				Required: []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}}},
		{name: "NULL to a value is a change",
			changes: []*replication.Change{upd(fnF, []string{"1", "NULL", "0.2", "3", "n"}, "1", "0.1", "0.2", "3", "n")},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_x", Old: nil, New: ptr("0.1")}},
				Required:   []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}}},
		{name: "a value to NULL is a change, and a NULL version stays NULL",
			changes: []*replication.Change{upd(fnF, []string{"1", "0.1", "0.2", "NULL", "n"}, "1", "0.1", "NULL", "NULL", "n")},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_y", Old: ptr("0.2"), New: nil}},
				Required:   []rules.ColumnChange{{Column: "version", Old: nil, New: nil}},
			}}},
		{name: "the version bumped",
			changes: []*replication.Change{upd(fnF, old, "1", "0.5", "0.6", "4", "n")}},
		{name: "the version set from NULL counts as a bump",
			changes: []*replication.Change{upd(fnF, []string{"1", "0.1", "0.2", "NULL", "n"}, "1", "0.5", "0.2", "1", "n")}},
		{name: "only an unrelated column changed",
			changes: []*replication.Change{upd(fnF, old, "1", "0.1", "0.2", "3", "changed")}},
		{name: "only the version changed",
			changes: []*replication.Change{upd(fnF, old, "1", "0.1", "0.2", "4", "n")}},
		{name: "NULL to NULL is no change",
			changes: []*replication.Change{upd(fnF, []string{"1", "NULL", "0.2", "3", "n"}, "1", "NULL", "0.2", "3", "m")}},
		{name: "an unchanged TOASTed value is unchanged",
			changes: []*replication.Change{upd(fnF, old, "1", "~", "~", "3", "m")}},
		{name: "inserts and deletes keep every invariant",
			changes: []*replication.Change{ins(fnF, "2", "0.1", "0.2", "1", "n"), del(fnF, old...), truncate(fnF)}},
		{name: "without the old row the invariant cannot be checked",
			changes: []*replication.Change{upd(fnD, nil, "1", "0.5", "0.2", "3", "n")}},
		{name: "two rows, two violations, in change order",
			changes: []*replication.Change{
				upd(fnF, []string{"2", "0.1", "0.2", "3", "n"}, "2", "0.1", "0.9", "3", "n"),
				upd(fnF, old, "1", "0.5", "0.2", "3", "n"),
				upd(fnF, []string{"3", "0.1", "0.2", "3", "n"}, "3", "0.5", "0.2", "4", "n"),
			},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("2")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_y", Old: ptr("0.2"), New: ptr("0.9")}},
				Required:   []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}, {
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_x", Old: ptr("0.1"), New: ptr("0.5")}},
				Required:   []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}}},
		{name: "a composite primary key",
			changes: []*replication.Change{upd(fnTwoKey, []string{"t1", "1", "0.1", "0.2", "3"}, "t1", "1", "0.5", "0.2", "3")},
			violations: []rules.Violation{{
				Invariant: "bump", Severity: "error", Message: "bump it", Table: "public.impact_functions",
				PrimaryKey: []rules.ColumnValue{{Column: "tenant", Value: ptr("t1")}, {Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "mdd_x", Old: ptr("0.1"), New: ptr("0.5")}},
				Required:   []rules.ColumnChange{{Column: "version", Old: ptr("3"), New: ptr("3")}},
			}}},
		{name: "default severity and message",
			changes: []*replication.Change{upd(quiet, []string{"1", "a", "v1"}, "1", "b", "v1")},
			violations: []rules.Violation{{
				Invariant: "quiet", Severity: "warning", Message: "a changed without a change to v", Table: "public.quiet",
				PrimaryKey: []rules.ColumnValue{{Column: "id", Value: ptr("1")}},
				Changed:    []rules.ColumnChange{{Column: "a", Old: ptr("a"), New: ptr("b")}},
				Required:   []rules.ColumnChange{{Column: "v", Old: ptr("v1"), New: ptr("v1")}},
			}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(t, c.changes...)
			for i := range p.Violations {
				v := &p.Violations[i]
				if v.LSN != "0/16B3748" || v.Xid != 42 || !v.CommitTime.Equal(commitTime) {
					t.Errorf("violation %d: LSN %q, xid %d, commit time %v", i, v.LSN, v.Xid, v.CommitTime)
				}
				v.LSN, v.Xid, v.CommitTime = "", 0, time.Time{}
			}
			got, _ := json.MarshalIndent(p.Violations, "", "  ")
			want, _ := json.MarshalIndent(c.violations, "", "  ")
			if string(got) != string(want) {
				t.Errorf("violations\n got %s\nwant %s", got, want)
			}
		})
	}
}

// An invariant's table without a primary key: the violation names no key
// rather than a wrong one.
func TestEvaluateInvariantWithoutPrimaryKey(t *testing.T) {
	p := plan(t, upd(fnNoPK, []string{"1", "0.1", "0.2", "3", "n"}, "1", "0.5", "0.2", "3", "n"))
	if len(p.Violations) != 1 {
		t.Fatalf("violations %+v", p.Violations)
	}
	if v := p.Violations[0]; len(v.PrimaryKey) != 0 || len(v.Changed) != 1 || v.Changed[0].Column != "mdd_x" {
		t.Errorf("violation %+v", v)
	}
}

func TestEvaluateInvariantInvalidates(t *testing.T) {
	old := []string{"1", "0.1", "0.2", "3", "n"}
	cases := []struct {
		name            string
		change          *replication.Change
		keys, revisions []string
		patterns        []string
	}{
		{name: "violation: the sections resolved against the row",
			change:    upd(fnF, old, "1", "0.5", "0.2", "3", "n"),
			keys:      []string{"impact:1:v3 impact/bump/new"},
			revisions: []string{"impact:1:rev impact"}},
		{name: "a watched column changed with a new version: both versions' keys",
			change:    upd(fnF, old, "1", "0.5", "0.2", "4", "n"),
			keys:      []string{"impact:1:v4 impact/bump/new", "impact:1:v3 impact/bump/old"},
			revisions: []string{"impact:1:rev impact"}},
		{name: "an unrelated column changed: nothing",
			change: upd(fnF, old, "1", "0.1", "0.2", "3", "m")},
		{name: "only the version changed: nothing",
			change: upd(fnF, old, "1", "0.1", "0.2", "4", "n")},
		{name: "no old row: when in doubt, invalidate",
			change:    upd(fnD, nil, "1", "0.1", "0.2", "3", "n"),
			keys:      []string{"impact:1:v3 impact/bump/new"},
			patterns:  []string{"impact:*:v* impact/bump/old_row_unknown"},
			revisions: []string{"impact:1:rev impact"}},
		{name: "inserts do not invalidate an invariant's sections",
			change: ins(fnF, "1", "0.1", "0.2", "3", "n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := plan(t, c.change)
			if got := keyList(p); !slices.Equal(got, c.keys) {
				t.Errorf("keys\n got %q\nwant %q", got, c.keys)
			}
			if got := patternList(p); !slices.Equal(got, c.patterns) {
				t.Errorf("patterns\n got %q\nwant %q", got, c.patterns)
			}
			if got := revisionList(p); !slices.Equal(got, c.revisions) {
				t.Errorf("revisions\n got %q\nwant %q", got, c.revisions)
			}
		})
	}
}

// These pin the per-transaction evaluation of invariants (README,
// "Invariants are checked per transaction"); they predate this file.
func TestEvaluateInvariantsAcrossStatements(t *testing.T) {
	old := []string{"1", "0.1", "0.2", "3", "n"}
	cases := []struct {
		name    string
		changes []*replication.Change
		want    int
	}{
		{"bump in a second statement", []*replication.Change{
			upd(fnF, old, "1", "0.5", "0.2", "3", "n"),
			upd(fnF, []string{"1", "0.5", "0.2", "3", "n"}, "1", "0.5", "0.2", "4", "n")}, 0},
		{"changed back", []*replication.Change{
			upd(fnF, old, "1", "0.5", "0.2", "3", "n"),
			upd(fnF, []string{"1", "0.5", "0.2", "3", "n"}, "1", "0.1", "0.2", "3", "n")}, 0},
		{"inserted then updated", []*replication.Change{
			ins(fnF, "9", "0.1", "0.2", "1", "n"),
			upd(fnF, []string{"9", "0.1", "0.2", "1", "n"}, "9", "0.5", "0.2", "1", "n")}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if p := plan(t, c.changes...); len(p.Violations) != c.want {
				t.Errorf("%d violations, want %d: %+v", len(p.Violations), c.want, p.Violations)
			}
		})
	}
}

// Value data is only valid during Add (it may point into the receive
// buffer): nothing the plan holds may alias it.
func TestEvaluateCopiesValues(t *testing.T) {
	buf := []byte("7|0.1|0.5|3")
	val := func(from, to int) replication.Value {
		return replication.Value{Kind: replication.Text, Data: buf[from:to]}
	}
	run := &replication.Change{Op: replication.OpInsert, Rel: runsF, New: replication.Tuple{Kind: replication.NewTuple,
		Values: []replication.Value{val(0, 1), val(0, 1), val(0, 1)}}}
	fn := &replication.Change{Op: replication.OpUpdate, Rel: fnF,
		Old: replication.Tuple{Kind: replication.OldTuple, Values: []replication.Value{val(0, 1), val(2, 5), val(2, 5), val(10, 11), val(0, 1)}},
		New: replication.Tuple{Kind: replication.NewTuple, Values: []replication.Value{val(0, 1), val(6, 9), val(2, 5), val(10, 11), val(0, 1)}}}
	rs := compile(t, evalRules)
	b := rs.Begin(begin)
	b.Add(run)
	b.Add(fn)
	for i := range buf {
		buf[i] = 'X'
	}
	p := b.Plan(commit)
	want := []string{"nodb:7:climate run/climate-run/new", "impact:7:v3 impact/bump/new"}
	if got := keyList(p); !slices.Equal(got, want) {
		t.Errorf("keys %q, want %q", got, want)
	}
	if len(p.Violations) != 1 {
		t.Fatalf("violations %+v", p.Violations)
	}
	v := p.Violations[0]
	if *v.PrimaryKey[0].Value != "7" || *v.Changed[0].Old != "0.1" || *v.Changed[0].New != "0.5" || *v.Required[0].New != "3" {
		t.Errorf("violation values alias the buffer: %s", must(json.Marshal(v)))
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A relation the server re-sends (same id, new layout) is bound afresh.
func TestEvaluateRelationLayoutChange(t *testing.T) {
	rs := compile(t, evalRules)
	v1 := rel(40, "public.runs", 'f', "id*", "run_id", "payload")
	v2 := rel(40, "public.runs", 'f', "id*", "payload", "run_id") // a column added before run_id, say
	v3 := rel(40, "public.runs", 'f', "id*", "payload")           // run_id dropped

	p := evaluate(rs, ins(v1, "1", "7", "p"), ins(v2, "2", "q", "8"))
	want := []string{"nodb:7:climate run/climate-run/new", "nodb:8:climate run/climate-run/new"}
	if got := keyList(p); !slices.Equal(got, want) {
		t.Errorf("within a transaction: %q, want %q", got, want)
	}
	// The next transaction with the first layout again.
	if got := keyList(evaluate(rs, ins(v1, "3", "9", "p"))); !slices.Equal(got, []string{"nodb:9:climate run/climate-run/new"}) {
		t.Errorf("next transaction: %q", got)
	}
	p = evaluate(rs, ins(v3, "4", "p"))
	if got := patternList(p); !slices.Equal(got, []string{"nodb:*:climate run/climate-run/missing_column"}) || len(p.Keys) != 0 {
		t.Errorf("after a drop: keys %q, patterns %q", keyList(p), got)
	}
	if len(p.MissingColumns) != 1 || p.MissingColumns[0] != (rules.MissingColumn{Rule: "climate-run", Table: "public.runs", Column: "run_id"}) {
		t.Errorf("MissingColumns %+v", p.MissingColumns)
	}
}

// Rules are shared by every transaction: evaluate from many goroutines
// (run with -race).
func TestEvaluateConcurrently(t *testing.T) {
	rs := compile(t, evalRules)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 16 {
		wg.Go(func() {
			r := rel(uint32(100+g%4), "public.runs", 'f', "id*", "run_id", "payload")
			for i := range 200 {
				run := fmt.Sprint(g*1000 + i)
				p := evaluate(rs, ins(r, "1", run, "p"), upd(fnF, []string{"1", "a", "b", "1", "n"}, "1", "c", "b", "1", "n"))
				if len(p.Keys) != 2 || p.Keys[0].Key != "nodb:"+run+":climate" || len(p.Violations) != 1 {
					errs <- fmt.Sprintf("goroutine %d: keys %q, %d violations", g, keyList(p), len(p.Violations))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestEscalationBoundsKeys(t *testing.T) {
	rs := compile(t, `{"sections": {"run": {"keys": ["lit", "run:{run_id}"]}},
		"rules": [{"name": "runs", "tables": ["public.runs"], "invalidate": ["run"]}]}`, rules.WithMaxTxKeys(100))
	b := rs.Begin(replication.Begin{Xid: 1})
	for i := range 1000 {
		b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p"))
	}
	p := b.Plan(replication.Commit{})
	if got, want := append(keyList(p), patternList(p)...), []string{"lit run/runs/literal", "run:* run/runs/escalated"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	b = rs.Begin(replication.Begin{Xid: 2})
	for i := range 99 {
		b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p"))
	}
	if p := b.Plan(replication.Commit{}); len(p.Keys) != 100 || len(p.Patterns) != 0 {
		t.Errorf("under the limit: %d keys, %d patterns", len(p.Keys), len(p.Patterns))
	}
}

func TestSharedKeyAnnouncedOnEverySection(t *testing.T) {
	f, err := rules.Parse("x.json", []byte(`{"sections": {
		"a": {"keys": ["shared:{run_id}"], "channel": "ca"},
		"b": {"keys": ["shared:{run_id}"], "channel": "cb"}},
		"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["a", "b"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := rules.Compile(f)
	b := rs.Begin(replication.Begin{})
	b.Add(ins(runsF, "1", "7"))
	p := b.Plan(replication.Commit{})
	if len(p.Messages) != 2 {
		t.Fatalf("%d messages", len(p.Messages))
	}
	for _, m := range p.Messages {
		if !strings.Contains(string(m.Payload), `"keys":["shared:7"]`) {
			t.Errorf("channel %s: %s", m.Channel, m.Payload)
		}
	}
}

func TestRevisionsEscalate(t *testing.T) {
	rs := compile(t, `{"sections": {"s": {"keys": ["k:{run_id}"], "revision": "rev:{run_id}"}},
		"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": ["s"]}]}`, rules.WithMaxTxKeys(10))
	b := rs.Begin(replication.Begin{})
	for i := 0; i < 1000; i++ {
		b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i)))
	}
	p := b.Plan(replication.Commit{})
	if len(p.Revisions) != 1 || !p.Revisions[0].IsPattern || p.Revisions[0].Key != "rev:*" {
		t.Errorf("revisions %+v", p.Revisions)
	}
}

// A Builder scans its first few keys and revisions and indexes the rest in
// maps; deduplication and the key limit must hold the same on both sides of
// that switch.
func TestKeyLimitAcrossIndexing(t *testing.T) {
	const src = `{"sections": {"run": {"keys": ["lit", "run:{run_id}"], "revision": "rev:{run_id}"}},
		"rules": [{"name": "runs", "tables": ["public.runs"], "invalidate": ["run"]}]}`
	for _, limit := range []int{1, 2, 7, 8, 9, 10, 30} {
		for _, n := range []int{limit - 2, limit - 1, limit, limit + 1, 3 * limit} {
			if n < 1 {
				continue
			}
			t.Run(fmt.Sprintf("limit %d, %d distinct rows", limit, n), func(t *testing.T) {
				rs := compile(t, src, rules.WithMaxTxKeys(limit))
				b := rs.Begin(replication.Begin{Xid: 1})
				// Every row twice, the second time after all the others.
				for round := 0; round < 2; round++ {
					for i := range n {
						b.Add(ins(runsF, fmt.Sprint(i), fmt.Sprint(i), "p"))
					}
				}
				p := b.Plan(replication.Commit{})
				keys, revs := keyList(p), revisionList(p)
				// "lit" counts toward the limit: n+1 distinct keys.
				if n+1 <= limit {
					if len(keys) != n+1 || len(p.Patterns) != 0 {
						t.Fatalf("under the limit: keys %q, patterns %q", keys, patternList(p))
					}
					seen := map[string]bool{}
					for _, k := range p.Keys {
						if seen[k.Key] {
							t.Fatalf("key %s twice", k.Key)
						}
						seen[k.Key] = true
					}
				} else if want := []string{"lit run/runs/literal", "run:* run/runs/escalated"}; !slices.Equal(append(keys, patternList(p)...), want) {
					t.Fatalf("over the limit: got %q, want %q", append(keys, patternList(p)...), want)
				}
				if n <= limit {
					if len(revs) != n {
						t.Fatalf("%d revisions for %d rows under the limit: %q", len(revs), n, revs)
					}
				} else if !slices.Equal(revs, []string{"rev:* run (pattern)"}) {
					t.Fatalf("revisions over the limit: %q", revs)
				}
			})
		}
	}
}

func TestManySectionsTouched(t *testing.T) {
	var sections, names []string
	for i := range 20 {
		sections = append(sections, fmt.Sprintf(`"s%d": {"keys": ["k%d:{run_id}"], "channel": "c"}`, i, i))
		names = append(names, fmt.Sprintf(`"s%d"`, i))
	}
	rs := compile(t, `{"sections": {`+strings.Join(sections, ",")+`},
		"rules": [{"name": "r", "tables": ["public.runs"], "invalidate": [`+strings.Join(names, ",")+`]}]}`)
	b := rs.Begin(replication.Begin{})
	for i := range 3 {
		b.Add(ins(runsF, fmt.Sprint(i), "7", "p")) // the same keys three times
	}
	p := b.Plan(replication.Commit{})
	if len(p.Keys) != 20 || len(p.Messages) != 20 {
		t.Fatalf("%d keys, %d messages, want 20 of each", len(p.Keys), len(p.Messages))
	}
	for i, m := range p.Messages {
		if m.Section != fmt.Sprintf("s%d", i) {
			t.Errorf("message %d is section %s: not in first-touch order", i, m.Section)
		}
	}
}

// The common transaction, one row that names a key and a revision, costs
// four allocations: the Builder, the two strings and the channel message.
func TestSmallTransactionAllocations(t *testing.T) {
	rs := compile(t, evalRules)
	change := ins(runsF, "1", "7", "p")
	allocs := testing.AllocsPerRun(200, func() {
		b := rs.Begin(begin)
		b.Add(change)
		b.Plan(commit)
	})
	if allocs > 4 {
		t.Errorf("%.0f allocations for a one-row transaction, want at most 4", allocs)
	}
}
