package rules_test

import (
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

func TestReaderAdvice(t *testing.T) {
	f, err := rules.Parse("r.json", []byte(`{
  "sections": {
    "guarded":  { "keys": ["item:{id}"], "revision": "item:{id}:rev" },
    "bare":     { "keys": ["bare:{id}"] },
    "wide":     { "keys": ["impact:{id}:v{version}"], "revision": "impact:{id}:rev" },
    "literal":  { "keys": ["run:{run}"], "revision": "runs:rev" },
    "foreign":  { "keys": ["sum:{topic}"], "revision": "rev:{workplan}" },
    "channel":  { "channel": "c" }
  },
  "rules": [{ "name": "r", "tables": ["t"], "invalidate": ["guarded", "bare", "wide", "literal", "foreign", "channel"] }]
}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range f.ReaderAdvice() {
		kind := "warning"
		if a.Note {
			kind = "note"
		}
		got = append(got, kind+": "+a.Msg)
	}
	want := []string{
		`warning: section "bare" has keys but no revision`,
		`note: section "wide": revision "impact:{id}:rev" does not name {version} of key "impact:{id}:v{version}"`,
		`note: section "literal": revision "runs:rev" does not name {run}`,
		`warning: section "foreign": revision "rev:{workplan}" names {workplan}, which key "sum:{topic}" lacks`,
		`note: section "foreign": revision "rev:{workplan}" does not name {topic}`,
	}
	if len(got) != len(want) {
		t.Fatalf("advice:\n%s", strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("advice %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}
