package rules_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

var update = flag.Bool("update", false, "rewrite the .expected files of the bad corpus")

func TestGoodCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "good", "*.json"))
	if len(files) == 0 {
		t.Fatal("no good corpus")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pf, err := rules.Parse(f, data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if _, err := rules.Compile(pf); err != nil {
			t.Errorf("%s: compile: %v", f, err)
		}
	}
}

// Each bad file lists, in NAME.expected, every problem the parser must
// report, one per line, in file order.
func TestBadCorpus(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.json"))
	if len(files) == 0 {
		t.Fatal("no bad corpus")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = rules.Parse(f, data)
			var pe *rules.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("want a *ParseError, got %v", err)
			}
			got := pe.Error() + "\n"
			exp := strings.TrimSuffix(f, ".json") + ".expected"
			if *update {
				if err := os.WriteFile(exp, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(exp)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("problems differ.\ngot:\n%s\nwant:\n%s", got, want)
			}
			for _, p := range pe.Problems {
				if p.File != f || p.Pos.Line == 0 {
					t.Errorf("problem without a position: %s", p)
				}
			}
		})
	}
}

func TestParseNormalisesTablesAndDefaults(t *testing.T) {
	f, err := rules.Parse("x.json", []byte(`{"sections": {"s": {"keys": ["k"]}},
		"rules": [{"name": "r", "tables": ["t", "app.u"], "invalidate": ["s"]}],
		"invariants": [{"name": "i", "table": "v", "when_changed": ["a"], "require_changed": ["b"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Rules[0].Tables, ","); got != "public.t,app.u" {
		t.Errorf("tables %s", got)
	}
	inv := f.Invariants[0]
	if inv.Table != "public.v" || inv.Severity != "warning" || !strings.Contains(inv.Message, "a changed without a change to b") {
		t.Errorf("invariant defaults: %+v", inv)
	}
	rs, err := rules.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rs.Tables(), ","); got != "app.u,public.t,public.v" {
		t.Errorf("Tables() = %s", got)
	}
}
