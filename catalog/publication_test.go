package catalog

import (
	"strings"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

const pubRules = `{
  "sections": {
    "core": { "keys": ["core"] },
    "run":  { "keys": ["run:{run_id}"] }
  },
  "rules": [
    { "name": "all-ops", "tables": ["public.runs"], "invalidate": ["run"] },
    { "name": "inserts", "tables": ["public.events"], "operations": ["insert"], "invalidate": ["core"] },
    { "name": "titles", "tables": ["public.runs"], "operations": ["update"], "columns": ["title"], "invalidate": ["core"] }
  ],
  "invariants": [
    { "name": "bump", "table": "public.runs", "when_changed": ["body"], "require_changed": ["version"],
      "severity": "warning", "message": "m" }
  ]
}`

func pubTables() map[string]*table {
	return map[string]*table{
		"public.runs": {exists: true, identity: 'd', columns: []string{"id", "run_id", "title", "body", "version"},
			identCol: []string{"id"}},
		"public.events": {exists: true, identity: 'd', columns: []string{"id", "msg"}, identCol: []string{"id"}},
	}
}

func everything() pubOptions {
	return pubOptions{name: "p", ops: map[string]bool{"insert": true, "update": true, "delete": true, "truncate": true},
		member: map[string]bool{"public.runs": true, "public.events": true}, rels: map[string]pubRel{}}
}

func usable() map[string]replication.Identity {
	return map[string]replication.Identity{
		"public.runs":   {Table: "public.runs", Kind: 'd', Indexed: true},
		"public.events": {Table: "public.events", Kind: 'd', Indexed: true},
	}
}

func TestPubFindings(t *testing.T) {
	f, err := rules.Parse("rules.json", []byte(pubRules))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		change func(o *pubOptions, tables map[string]*table, ids map[string]replication.Identity)
		want   []string // one per finding, in order
	}{
		{"publishes everything", func(*pubOptions, map[string]*table, map[string]replication.Identity) {}, nil},
		{"no truncate", func(o *pubOptions, _ map[string]*table, _ map[string]replication.Identity) {
			o.ops["truncate"] = false
		}, []string{
			// The inserts rule needs no truncate; the fix keeps what is published.
			`rule "all-ops": publication p does not publish truncate (publish = 'insert, update, delete'), so no truncate of public.runs reaches cdcd and its sections are never invalidated for it. Fix: ALTER PUBLICATION "p" SET (publish = 'insert, update, delete, truncate')`,
		}},
		{"inserts only", func(o *pubOptions, _ map[string]*table, _ map[string]replication.Identity) {
			o.ops["update"], o.ops["delete"], o.ops["truncate"] = false, false, false
		}, []string{
			`rule "all-ops": publication p does not publish update, delete, truncate (publish = 'insert'), so no update or delete or truncate of public.runs`,
			`rule "titles": publication p does not publish update`,
			`invariant "bump": publication p does not publish update (publish = 'insert'), so no update of public.runs reaches cdcd and the invariant never fires`,
		}},
		{"no primary key", func(o *pubOptions, _ map[string]*table, ids map[string]replication.Identity) {
			ids["public.events"] = replication.Identity{Table: "public.events", Kind: 'd'}
		}, []string{
			"table public.events has no usable replica identity (REPLICA IDENTITY DEFAULT and no primary key): it is in publication p",
		}},
		{"no primary key, updates and deletes not published", func(o *pubOptions, _ map[string]*table, ids map[string]replication.Identity) {
			o.ops["update"], o.ops["delete"] = false, false
			ids["public.events"] = replication.Identity{Table: "public.events", Kind: 'd'}
		}, []string{ // about public.runs only: the writes on public.events do not fail
			`rule "all-ops": publication p does not publish update, delete (publish = 'insert, truncate')`,
			`rule "titles": publication p does not publish update`,
			`invariant "bump": publication p does not publish update`,
		}},
		{"row filter", func(o *pubOptions, _ map[string]*table, _ map[string]replication.Identity) {
			o.rels["public.events"] = pubRel{rowFilter: "(id > 10)"}
		}, []string{
			`publication p has a row filter on public.events (WHERE (id > 10)): changes of rows outside it never reach cdcd, which then neither invalidates their keys nor checks invariants on them. Fix: BEGIN; ALTER PUBLICATION "p" DROP TABLE public.events; ALTER PUBLICATION "p" ADD TABLE public.events; COMMIT`,
		}},
		{"column list hiding nothing needed", func(o *pubOptions, _ map[string]*table, _ map[string]replication.Identity) {
			o.rels["public.runs"] = pubRel{columns: []string{"id", "run_id", "title", "body", "version"}}
		}, nil},
		{"column list hiding rule columns and the key", func(o *pubOptions, _ map[string]*table, _ map[string]replication.Identity) {
			o.rels["public.runs"] = pubRel{columns: []string{"title"}, hidden: []string{"id", "run_id", "body", "version"}}
		}, []string{
			`publication p publishes only columns title of public.runs: it hides run_id (rule "all-ops"), body (invariant "bump"), version (invariant "bump"), which cdcd then cannot read; it hides replica identity (DEFAULT) column id, so cdcd cannot tell the old row's key and every UPDATE and DELETE the application runs on the table fails. Fix: BEGIN; ALTER PUBLICATION "p" DROP TABLE public.runs; ALTER PUBLICATION "p" ADD TABLE public.runs ("id", "run_id", "title", "body", "version"); COMMIT`,
		}},
		{"a table that does not exist is Check's to report", func(_ *pubOptions, tables map[string]*table, _ map[string]replication.Identity) {
			tables["public.events"] = &table{}
		}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o, tables, ids := everything(), pubTables(), usable()
			c.change(&o, tables, ids)
			got := pubFindings(f, o, tables, ids)
			if len(got) != len(c.want) {
				t.Fatalf("%d findings, want %d: %+v", len(got), len(c.want), got)
			}
			for i, fd := range got {
				if fd.Severity != Error {
					t.Errorf("finding %d is a %s", i, fd.Severity)
				}
				if !strings.Contains(fd.Msg, c.want[i]) {
					t.Errorf("finding %d:\n got %s\nwant %s", i, fd.Msg, c.want[i])
				}
			}
		})
	}
}
