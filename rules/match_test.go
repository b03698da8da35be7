package rules_test

import (
	"maps"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

func TestTemplateMatch(t *testing.T) {
	cases := []struct {
		text, key string
		want      []map[string]string // every reading, in order; nil: no match
	}{
		{"state:summary:core", "state:summary:core", []map[string]string{{}}},
		{"state:summary:core", "state:summary:cor", nil},
		{"nodb:{run_id}:climate", "nodb:42:climate", []map[string]string{{"run_id": "42"}}},
		{"nodb:{run_id}:climate", "nodb::climate", []map[string]string{{"run_id": ""}}},
		{"nodb:{run_id}:climate", "nodb:42:weather", nil},
		{"nodb:{run_id}:climate", "xnodb:42:climate", nil},
		{"impact:{id}:v{version}", "impact:3:v12", []map[string]string{{"id": "3", "version": "12"}}},
		{"impact:{id}:v{version}", "impact:3:12", nil},
		// A value holding the separator: two readings.
		{"a:{x}:{y}", "a:1:2:3", []map[string]string{{"x": "1", "y": "2:3"}, {"x": "1:2", "y": "3"}}},
		{"{a}{b}", "xy", []map[string]string{{"a": "", "b": "xy"}, {"a": "x", "b": "y"}, {"a": "xy", "b": ""}}},
		// A repeated placeholder takes one value.
		{"pair:{id}:{id}", "pair:5:5", []map[string]string{{"id": "5"}}},
		{"pair:{id}:{id}", "pair:5:6", nil},
		{"{a}:{a}", "x:y:x:y", []map[string]string{{"a": "x:y"}}},
		// Escaped braces and hash tags.
		{"item:{{{id}}}", "item:{7}", []map[string]string{{"id": "7"}}},
		{"item:{{{id}}}", "item:7", nil},
		{"k:{id}", "k:a\nb\x00c", []map[string]string{{"id": "a\nb\x00c"}}},
		{"{id}", "", []map[string]string{{"id": ""}}},
	}
	for _, c := range cases {
		t.Run(c.text+"="+c.key, func(t *testing.T) {
			tpl := rules.MustTemplate(c.text)
			got, complete := tpl.MatchAll(c.key, 0)
			if !complete {
				t.Fatal("MatchAll without a limit is incomplete")
			}
			if len(got) != len(c.want) {
				t.Fatalf("MatchAll(%q) = %q, want %q", c.key, got, c.want)
			}
			for i := range got {
				if !maps.Equal(got[i], c.want[i]) {
					t.Fatalf("MatchAll(%q)[%d] = %q, want %q", c.key, i, got[i], c.want[i])
				}
			}
			one, ok := tpl.Match(c.key)
			if ok != (len(c.want) > 0) || ok && !maps.Equal(one, c.want[0]) {
				t.Fatalf("Match(%q) = %q, %v", c.key, one, ok)
			}
		})
	}
}

func TestTemplateMatchLimit(t *testing.T) {
	tpl := rules.MustTemplate("{a}:{b}:{c}")
	all, complete := tpl.MatchAll("1:2:3:4:5", 0)
	if !complete || len(all) != 6 {
		t.Fatalf("%d readings, complete %v; want 6, true", len(all), complete)
	}
	some, complete := tpl.MatchAll("1:2:3:4:5", 4)
	if complete || len(some) != 4 {
		t.Fatalf("limit 4: %d readings, complete %v; want 4, false", len(some), complete)
	}
	exact, complete := tpl.MatchAll("1:2:3:4:5", 6)
	if !complete || len(exact) != 6 {
		t.Fatalf("limit 6: %d readings, complete %v; want 6, true", len(exact), complete)
	}
}

func TestTemplateRenderValues(t *testing.T) {
	tpl := rules.MustTemplate("impact:{id}:v{version}")
	if k, ok := tpl.RenderValues(map[string]string{"id": "3", "version": "9", "extra": "x"}); !ok || k != "impact:3:v9" {
		t.Fatalf("RenderValues = %q, %v", k, ok)
	}
	if _, ok := tpl.RenderValues(map[string]string{"id": "3"}); ok {
		t.Fatal("RenderValues without version succeeded")
	}
}

// Every key a template renders is matched, with the values it was rendered
// from among the readings, and every reading renders the key back.
func FuzzTemplateMatch(f *testing.F) {
	for _, s := range []string{
		"k", "nodb:{run_id}:climate", "impact:{id}:v{version}", "a:{x}:{y}", "{a}{b}", "{a}:{a}",
		"item:{{{id}}}", "{a}x{b}x{c}", "{a}",
	} {
		f.Add(s, "1", "2:3")
	}
	f.Fuzz(func(t *testing.T, text, v1, v2 string) {
		tpl, err := rules.ParseTemplate(text)
		if err != nil || len(v1)+len(v2) > 64 || len(tpl.Columns()) > 4 {
			return
		}
		values := map[string]string{}
		for i, c := range tpl.Columns() {
			if _, ok := values[c]; !ok {
				values[c] = []string{v1, v2}[i%2]
			}
		}
		key, ok := tpl.RenderValues(values)
		if !ok {
			t.Fatal("RenderValues lacks a value it was given")
		}
		readings, complete := tpl.MatchAll(key, 0)
		if !complete {
			t.Fatal("MatchAll without a limit is incomplete")
		}
		found := false
		for _, r := range readings {
			back, ok := tpl.RenderValues(r)
			if !ok || back != key {
				t.Fatalf("reading %q of %q renders %q", r, key, back)
			}
			found = found || maps.Equal(r, values)
		}
		if !found {
			t.Fatalf("%q rendered %q from %q, but the readings are %q", text, key, values, readings)
		}
		if _, ok := tpl.Match(key + "\x00" + strings.Repeat("z", len(text))); ok && tpl.IsLiteral() {
			t.Fatal("a literal template matched a longer key")
		}
	})
}
