package catalog

import (
	"context"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// catalogRow is a row of the partitions query: oid, name, relkind,
// persistence, parent, listed, member, identity, identity columns.
func catalogRow(oid, name, kind, parent, listed, identity string) []string {
	cols := `["id","v"]`
	if identity != "f" {
		cols = `["id"]`
	}
	return []string{oid, "public." + name, kind, "p", parent, listed, listed, identity, cols}
}

func TestPartitionFindings(t *testing.T) {
	f, err := rules.Parse("rules.json", []byte(`{
  "sections": { "s": { "keys": ["s:{id}"] } },
  "rules": [
    { "name": "on-root", "tables": ["public.m"], "invalidate": ["s"] },
    { "name": "on-leaf", "tables": ["public.m_eu"], "operations": ["insert"], "invalidate": ["s"] }
  ],
  "invariants": [ { "name": "bump", "table": "public.m", "when_changed": ["v"], "require_changed": ["id"] } ]
}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		viaRoot bool
		rows    [][]string
		want    []string // "severity: start of message"
		absent  []string
	}{
		{"the root under publish_via_partition_root", true, [][]string{
			catalogRow("1", "m", "p", "0", "t", "f"),
			catalogRow("2", "m_eu", "r", "1", "f", "f"),
			catalogRow("3", "m_us", "r", "1", "f", "d"),
			catalogRow("4", "m_f", "f", "1", "f", "d"),
		}, []string{
			"note: table public.m is partitioned into 3 partitions (public.m_eu, public.m_f, public.m_us)",
			"error: publication cdcd publishes partitions of public.m under their root's name",
			"warning: partitions public.m_f of public.m are foreign or unlogged tables",
			"error: table public.m has REPLICA IDENTITY FULL but its partitions public.m_us (DEFAULT) do not",
			"warning: table public.m_eu is a partition of public.m, and publication cdcd publishes its changes under the name of public.m",
		}, []string{
			// The rule on the partition names no truncate.
			"does not publish a TRUNCATE of public.m_eu alone",
		}},
		{"partitions one by one", false, [][]string{
			catalogRow("1", "m", "p", "0", "f", "f"),
			catalogRow("2", "m_eu", "r", "1", "t", "f"),
			catalogRow("3", "m_us", "r", "1", "t", "f"),
		}, []string{
			"warning: publication cdcd holds each partition of public.m but not public.m itself",
			"note: table public.m_eu is a partition of public.m: the server names the partition",
		}, []string{"error:"}},
		{"some partitions", false, [][]string{
			catalogRow("1", "m", "p", "0", "f", "f"),
			catalogRow("2", "m_eu", "r", "1", "t", "f"),
			catalogRow("3", "m_us", "r", "1", "f", "f"),
		}, []string{
			"error: publication cdcd holds only some partitions of public.m: changes to public.m_us are not streamed",
		}, nil},
		{"no partitions yet", false, [][]string{
			catalogRow("1", "m", "p", "0", "t", "f"),
		}, []string{
			"note: table public.m is partitioned and has no partitions yet",
		}, []string{"error:", "warning:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := func(_ context.Context, sql string) ([][]string, error) {
				if strings.Contains(sql, "pubviaroot") {
					return [][]string{{map[bool]string{true: "t", false: "f"}[tc.viaRoot]}}, nil
				}
				return tc.rows, nil
			}
			parts, err := replication.ReadPartitions(context.Background(), q, "cdcd", []string{"public.m", "public.m_eu"})
			if err != nil {
				t.Fatal(err)
			}
			var lines []string
			for _, fd := range partitionFindings(f, parts, "cdcd") {
				lines = append(lines, fd.Severity.String()+": "+fd.Msg)
			}
			out := strings.Join(lines, "\n")
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("lacks %q", w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(out, a) {
					t.Errorf("has %q", a)
				}
			}
			if t.Failed() {
				t.Log(out)
			}
		})
	}
}
