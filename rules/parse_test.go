package rules_test

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/cdcd/cdcd/rules"
)

var update = flag.Bool("update", false, "rewrite the .expected files of the bad corpus (then read them: every line must say what is wrong and where)")

// goodChecks pins what particular good files must parse to, beyond
// parsing: a file listed here must exist.
var goodChecks = map[string]func(t *testing.T, f *rules.File, rs *rules.Rules){
	"minimal.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if len(f.Sections) != 1 || len(f.Rules) != 1 || len(f.Invariants) != 0 {
			t.Fatalf("%d sections, %d rules, %d invariants", len(f.Sections), len(f.Rules), len(f.Invariants))
		}
		r := f.Rules[0]
		if r.Name != "r" || !slices.Equal(r.Tables, []string{"public.t"}) || r.Operations != nil || r.Columns != nil ||
			!slices.Equal(r.Invalidate, []string{"s"}) {
			t.Errorf("rule %+v", r)
		}
		s := f.Section("s")
		if s == nil || len(s.Keys) != 1 || !s.Keys[0].IsLiteral() || s.Keys[0].Literal() != "k" || s.Revision != nil || s.Channel != "" {
			t.Errorf("section %+v", s)
		}
	},
	"reference.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if f.Schema != "./rules.schema.json" {
			t.Errorf("$schema %q", f.Schema)
		}
		var names []string
		for _, s := range f.Sections {
			names = append(names, s.Name)
		}
		if want := []string{"summary.core", "summary.progress", "run.climate", "impact.function"}; !slices.Equal(names, want) {
			t.Errorf("sections %v, want %v (file order)", names, want)
		}
		rc := f.Section("run.climate")
		if rc.Channel != "cdcd:invalidations" || rc.Keys[0].Text != "nodb:{run_id}:climate" ||
			!slices.Equal(rc.Keys[0].Columns(), []string{"run_id"}) || rc.Description != "Per-run climate results." {
			t.Errorf("run.climate %+v", rc)
		}
		if rev := f.Section("summary.core").Revision; rev == nil || rev.Literal() != "state:summary:rev:core" {
			t.Errorf("summary.core revision %v", rev)
		}
		tt := f.Rules[2]
		if tt.Name != "task-title" || !slices.Equal(tt.Operations, []string{"update"}) || !slices.Equal(tt.Columns, []string{"title", "status"}) {
			t.Errorf("task-title %+v", tt)
		}
		inv := f.Invariants[0]
		if inv.Table != "public.impact_functions" || inv.Severity != "warning" || len(inv.WhenChanged) != 5 ||
			!slices.Equal(inv.RequireChanged, []string{"version"}) || !strings.HasPrefix(inv.Message, "coefficients changed") {
			t.Errorf("invariant %+v", inv)
		}
		want := []string{"public.climate_runs", "public.impact_functions", "public.progress_events", "public.tasks", "public.topics", "public.workplans"}
		if got := rs.Tables(); !slices.Equal(got, want) {
			t.Errorf("Tables() = %v, want %v", got, want)
		}
	},
	"escaped-braces.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		s := f.Section("json")
		var got []string
		for _, k := range s.Keys {
			got = append(got, k.Pattern())
		}
		if want := []string{"{literal}", "obj:{*}", "x}{y:*"}; !slices.Equal(got, want) {
			t.Errorf("patterns %q, want %q", got, want)
		}
		if !s.Keys[0].IsLiteral() || s.Keys[0].Literal() != "{literal}" || s.Revision.Literal() != "rev:{v}" {
			t.Errorf("literals %q %q", s.Keys[0].Literal(), s.Revision.Literal())
		}
		if !slices.Equal(s.Keys[1].Columns(), []string{"id"}) || !slices.Equal(s.Keys[2].Columns(), []string{"id"}) {
			t.Errorf("columns %v %v", s.Keys[1].Columns(), s.Keys[2].Columns())
		}
	},
	"unqualified-table.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if got := f.Rules[0].Tables; !slices.Equal(got, []string{"public.tasks", "app.tasks", "public.topics"}) {
			t.Errorf("tables %v", got)
		}
		if f.Invariants[0].Table != "public.fn" {
			t.Errorf("invariant table %q", f.Invariants[0].Table)
		}
		if got := rs.Tables(); !slices.Equal(got, []string{"app.tasks", "public.fn", "public.tasks", "public.topics"}) {
			t.Errorf("Tables() = %v", got)
		}
	},
	"invariant-invalidate.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if len(f.Rules) != 0 || len(f.Invariants) != 2 {
			t.Fatalf("%d rules, %d invariants", len(f.Rules), len(f.Invariants))
		}
		b, q := f.Invariants[0], f.Invariants[1]
		if b.Severity != "critical" || b.Message != "a or b changed without a new version" ||
			!slices.Equal(b.Invalidate, []string{"fn", "audit"}) || !slices.Equal(b.RequireChanged, []string{"version", "revised_at"}) {
			t.Errorf("bump %+v", b)
		}
		if q.Severity != "info" || q.Message != "c changed without a change to version" || !slices.Equal(q.Invalidate, []string{"fn"}) {
			t.Errorf("quiet %+v", q)
		}
		if a := f.Section("audit"); a.Channel != "cdcd:audit" || a.Keys != nil || a.Revision != nil {
			t.Errorf("audit %+v", a)
		}
	},
	"descriptions.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if f.Sections[0].Description != "A section: what it caches and who reads it." ||
			f.Rules[0].Description != "Why these tables matter." || f.Invariants[0].Description != "What must hold." {
			t.Errorf("descriptions %q %q %q", f.Sections[0].Description, f.Rules[0].Description, f.Invariants[0].Description)
		}
		if f.Invariants[0].Severity != "warning" || f.Invariants[0].Message != "a changed without a change to b" {
			t.Errorf("invariant defaults %+v", f.Invariants[0])
		}
	},
	"schema-ref.json": func(t *testing.T, f *rules.File, rs *rules.Rules) {
		if f.Schema != "https://github.com/cdcd/cdcd/rules.schema.json" {
			t.Errorf("$schema %q", f.Schema)
		}
		if s := f.Section("s"); s.Keys != nil || s.Revision == nil || s.Revision.Literal() != "rev:s" {
			t.Errorf("section %+v", s)
		}
		if r := f.Rules[0]; !slices.Equal(r.Operations, []string{"truncate", "delete"}) || !slices.Equal(r.Columns, []string{"x"}) {
			t.Errorf("rule %+v", r)
		}
	},
}

func TestGoodCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "good", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no good corpus: %v", err)
	}
	for name := range goodChecks {
		if !slices.Contains(files, filepath.Join("testdata", "good", name)) {
			t.Errorf("testdata/good/%s is checked but missing", name)
		}
	}
	// The repository's own example must stay valid too.
	files = append(files, filepath.Join("..", "rules.json"))
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := rules.Parse(path, data)
			if err != nil {
				t.Fatalf("rejects a good file:\n%v", err)
			}
			if f.Name != path {
				t.Errorf("File.Name = %q", f.Name)
			}
			rs, err := rules.Compile(f)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			if rs.File() != f {
				t.Error("Rules.File() is not the parsed file")
			}
			if check := goodChecks[filepath.Base(path)]; check != nil && filepath.Dir(path) != ".." {
				check(t, f, rs)
			}
		})
	}
}

// Each bad file NAME.json has NAME.expected: every problem the parser must
// report, one per line, FILE:LINE:COL: message, in file order.
func TestBadCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad corpus: %v", err)
	}
	expected, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.expected"))
	for _, e := range expected {
		if !slices.Contains(files, strings.TrimSuffix(e, ".expected")+".json") {
			t.Errorf("%s has no .json", e)
		}
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			f, err := rules.Parse(path, data)
			if f != nil {
				t.Error("Parse returned a file along with an error")
			}
			var pe *rules.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("want a *rules.ParseError, got %T: %v", err, err)
			}
			got := pe.Error() + "\n"
			exp := strings.TrimSuffix(path, ".json") + ".expected"
			if *update {
				if err := os.WriteFile(exp, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(exp)
			if err != nil {
				t.Fatalf("%v (run go test -run TestBadCorpus -update ./rules/ and read the result)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ.\ngot:\n%s\nwant:\n%s", got, want)
			}
			checkProblems(t, path, data, pe)
		})
	}
}

// checkProblems checks what every reported problem must satisfy: it names
// the file, points at a place inside it (at a token, not at a blank), and
// the problems come in file order.
func checkProblems(t *testing.T, name string, data []byte, pe *rules.ParseError) {
	t.Helper()
	if len(pe.Problems) == 0 {
		t.Fatal("a ParseError with no problems")
	}
	lines := strings.Split(string(data), "\n")
	for i, p := range pe.Problems {
		if p.File != name {
			t.Errorf("problem %d names file %q, want %q", i, p.File, name)
		}
		if p.Msg == "" {
			t.Errorf("problem %d has no message", i)
		}
		if p.Pos.Line < 1 || p.Pos.Line > len(lines) {
			t.Errorf("%s: line outside the file (%d lines)", p, len(lines))
			continue
		}
		line := []rune(strings.TrimPrefix(lines[p.Pos.Line-1], "\uFEFF"))
		switch {
		case p.Pos.Col < 1 || p.Pos.Col > len(line)+1:
			t.Errorf("%s: column outside the line (%d characters)", p, len(line))
		case p.Pos.Col <= len(line) && (line[p.Pos.Col-1] == ' ' || line[p.Pos.Col-1] == '\t'):
			t.Errorf("%s: points at a blank", p)
		}
		if i > 0 {
			q := pe.Problems[i-1]
			if q.Pos.Line > p.Pos.Line || (q.Pos.Line == p.Pos.Line && q.Pos.Col > p.Pos.Col) {
				t.Errorf("not in file order: %s after %s", p, q)
			}
		}
	}
}

// problems parses src as x.json and returns the problem lines, or nil.
func problems(t *testing.T, src string) []string {
	t.Helper()
	f, err := rules.Parse("x.json", []byte(src))
	if err == nil {
		if f == nil {
			t.Fatal("Parse returned neither a file nor an error")
		}
		return nil
	}
	var pe *rules.ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("want a *rules.ParseError, got %T: %v", err, err)
	}
	checkProblems(t, "x.json", []byte(src), pe)
	return strings.Split(pe.Error(), "\n")
}

// ok is a valid file's tail, for cases that test one part.
const okRule = `"rules": [{"name": "r", "tables": ["t"], "invalidate": ["s"]}]`

func TestParseProblems(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want []string // without the "x.json:" prefix
	}{
		{"valid", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `}`, nil},
		{"empty input", ``, []string{"1:1: unexpected end of file, expected a value"}},
		{"only a BOM", "\uFEFF", []string{"1:1: unexpected end of file, expected a value"}},
		{"BOM before a valid file", "\uFEFF" + `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `}`, nil},
		{"BOM does not shift columns", "\uFEFF" + `{"x": 1}`, []string{
			`1:1: the rules file has no "sections"`,
			`1:1: the rules file has neither "rules" nor "invariants"`,
			`1:2: unknown field "x" in the rules file (known: $schema, sections, rules, invariants)`}},
		{"unclosed object", `{`, []string{"1:2: unexpected end of file, expected a field name in quotes"}},
		{"field without value", `{"a"`, []string{`1:5: unexpected end of file, expected ':' after field "a"`}},
		{"value then end of file", `{"a": 1`, []string{`1:8: unexpected end of file, expected ',' or '}'`}},
		{"unclosed list", `{"a": [1`, []string{`1:9: unexpected end of file, expected ',' or ']'`}},
		{"trailing comma in a list", `[1,]`, []string{"1:4: unexpected ']', expected a value"}},
		{"trailing comma in an object", "{\"a\": 1,\n}", []string{"2:1: unexpected '}', expected a field name in quotes"}},
		{"missing comma", `{"a": 1 "b": 2}`, []string{`1:9: unexpected '"', expected ',' or '}'`}},
		{"single quotes", `{'a': 1}`, []string{`1:2: unexpected '\'', expected a field name in quotes`}},
		{"bare word", `{"a": yes}`, []string{`1:7: unexpected 'y', expected a value`}},
		{"misspelt literal", `{"a": nul}`, []string{`1:7: unexpected 'n', expected a value`}},
		{"comment", "{\n  // no comments in JSON\n}", []string{`2:3: unexpected '/', expected a field name in quotes`}},
		{"garbage after the document", `{} {}`, []string{`1:4: unexpected '{' after the end of the document`}},
		{"malformed number", `{"a": 1.2.3}`, []string{`1:7: malformed number "1.2.3"`}},
		{"lone minus", `-`, []string{`1:1: malformed number "-"`}},
		{"invalid escape", `{"a\q": 1}`, []string{`1:4: invalid escape \q in string`}},
		{"truncated unicode escape", `"\u12`, []string{`1:4: truncated \u escape`}},
		{"invalid unicode escape", `"\u12zz"`, []string{`1:4: invalid \u escape`}},
		{"control character", "\"a\x01\"", []string{`1:3: control character '\x01' in string (escape it)`}},
		{"invalid UTF-8", "{\"a\": \"\xff\"}", []string{`1:8: invalid UTF-8 in string`}},
		{"line break in a string", "{\"a\": \"b\nc\"}", []string{`1:9: unterminated string (a line break inside a string is written \n)`}},
		{"unterminated at end of file", `{"a": "b`, []string{`1:9: unterminated string`}},
		{"backslash at end of file", `{"a": "b\`, []string{`1:9: unterminated string`}},
		{"columns count characters, not bytes", `{"sections": {"é": {"keys": ["ü"]}}, "rules": [], "x": 1}`, []string{
			`1:15: section "é" is not invalidated by any rule or invariant`,
			`1:51: unknown field "x" in the rules file (known: $schema, sections, rules, invariants)`}},
		{"CRLF line ends", "{\r\n  \"sections\": {\"s\": {\"keys\": [\"k\"]}},\r\n  \"x\": 1\r\n}", []string{
			`1:1: the rules file has neither "rules" nor "invariants"`,
			`2:16: section "s" is not invalidated by any rule or invariant`,
			`3:3: unknown field "x" in the rules file (known: $schema, sections, rules, invariants)`}},
		{"tab counts as one column", "{\n\t\"x\": 1, \"sections\": {\"s\": {\"keys\": [\"k\"]}}, " + okRule + "}", []string{
			`2:2: unknown field "x" in the rules file (known: $schema, sections, rules, invariants)`}},
		{"nesting too deep", strings.Repeat("[", 100) + strings.Repeat("]", 100), []string{"1:66: nesting deeper than 64 levels"}},
		{"not an object", `"rules"`, []string{"1:1: the rules file must be an object, not a string"}},
		{"null document", `null`, []string{"1:1: the rules file must be an object, not null"}},
		{"no sections, no rules", `{}`, []string{
			`1:1: the rules file has no "sections"`,
			`1:1: the rules file has neither "rules" nor "invariants"`}},
		{"empty sections", `{"sections": {}, "rules": []}`, []string{`1:14: "sections" is empty`}},
		{"empty rules list leaves sections unused", `{"sections": {"s": {"keys": ["k"]}}, "rules": []}`, []string{
			`1:15: section "s" is not invalidated by any rule or invariant`}},
		{"section not an object", `{"sections": {"s": 1}, ` + okRule + `}`, []string{
			`1:20: section "s" must be an object, not a number`,
			`1:80: rule "r" invalidates unknown section "s"`}},
		{"section with an empty name", `{"sections": {"": {"keys": ["k"]}}, "rules": []}`, []string{
			`1:15: a section has an empty name`}},
		{"section that does nothing", `{"sections": {"s": {"description": "d"}}, ` + okRule + `}`, []string{
			`1:15: section "s" has no "keys", "revision" or "channel": invalidating it would do nothing`}},
		{"empty key template", `{"sections": {"s": {"keys": [""]}}, ` + okRule + `}`, []string{`1:30: section "s" key is empty`}},
		{"empty revision", `{"sections": {"s": {"revision": ""}}, ` + okRule + `}`, []string{`1:33: section "s" revision is empty`}},
		{"empty channel", `{"sections": {"s": {"channel": ""}}, ` + okRule + `}`, []string{`1:32: section "s" "channel" is empty`}},
		{"key not a string", `{"sections": {"s": {"keys": [1]}}, ` + okRule + `}`, []string{`1:30: section "s" key must be a string, not a number`}},
		{"revision template error", `{"sections": {"s": {"revision": "r:{id"}}, ` + okRule + `}`, []string{
			`1:33: section "s" revision: template "r:{id": unbalanced '{' at offset 2`}},
		{"rule not an object", `{"sections": {"s": {"keys": ["k"]}}, "rules": ["r"]}`, []string{
			`1:15: section "s" is not invalidated by any rule or invariant`,
			`1:48: rule 1 must be an object, not a string`}},
		{"rule without anything", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{}]}`, []string{
			`1:15: section "s" is not invalidated by any rule or invariant`,
			`1:48: rule 1 has no "name"`,
			`1:48: rule 1 has no "tables"`,
			`1:48: rule 1 has no "invalidate"`}},
		{"blank rule name", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": " ", "tables": ["t"], "invalidate": ["s"]}]}`, []string{
			`1:57: rule 1 "name" is empty`}},
		{"empty entries", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": [""], "columns": [" "], "invalidate": ["s"]}]}`, []string{
			`1:73: rule "r" "tables" has an empty entry`,
			`1:90: rule "r" "columns" has an empty entry`}},
		{"table names", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["public.", ".t", "a b", "a.b.c", "x\ty"], "invalidate": ["s"]}]}`, []string{
			`1:73: rule "r": table "public.": write tables as schema.table`,
			`1:84: rule "r": table ".t": write tables as schema.table`,
			`1:90: rule "r": table "a b": write tables as schema.table without quotes or spaces`,
			`1:97: rule "r": table "a.b.c": write tables as schema.table`,
			`1:106: rule "r": table "x\ty": write tables as schema.table without quotes or spaces`}},
		{"operation case matters", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "operations": ["INSERT"], "invalidate": ["s"]}]}`, []string{
			`1:94: rule "r": unknown operation "INSERT" (one of insert, update, delete, truncate)`}},
		{"unknown section without a close name", `{"sections": {"s": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["s", "elsewhere"]}]}`, []string{
			`1:99: rule "r" invalidates unknown section "elsewhere"`}},
		{"unknown section with a close name", `{"sections": {"summary": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["summary", "sumary"]}]}`, []string{
			`1:111: rule "r" invalidates unknown section "sumary" (did you mean "summary"?)`}},
		{"field name in the wrong case", `{"Sections": {"s": {"keys": ["k"]}}, ` + okRule + `}`, []string{
			`1:1: the rules file has no "sections"`,
			`1:2: unknown field "Sections" in the rules file (did you mean "sections"?)`,
			`1:94: rule "r" invalidates unknown section "s"`}},
		{"same name for a rule and an invariant", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule +
			`, "invariants": [{"name": "r", "table": "t", "when_changed": ["a"], "require_changed": ["b"]}]}`, nil},
		{"invariant without anything", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `, "invariants": [{}]}`, []string{
			`1:117: invariant 1 has no "name"`,
			`1:117: invariant 1 has no "table"`,
			`1:117: invariant 1 has no "when_changed"`,
			`1:117: invariant 1 has no "require_changed"`}},
		{"invariant table", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `, "invariants": [{"name": "i", "table": "a.b.c", "when_changed": ["a"], "require_changed": ["b"]}]}`, []string{
			`1:140: invariant "i": table "a.b.c": write tables as schema.table`}},
		{"invariant lists a column twice", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `, "invariants": [{"name": "i", "table": "t", "when_changed": ["a", "a"], "require_changed": ["b"]}]}`, []string{
			`1:167: invariant "i" "when_changed" lists "a" twice`}},
		{"severity not a string", `{"sections": {"s": {"keys": ["k"]}}, ` + okRule + `, "invariants": [{"name": "i", "table": "t", "when_changed": ["a"], "require_changed": ["b"], "severity": 3}]}`, []string{
			`1:206: invariant "i" "severity" must be a string, not a number`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := problems(t, c.src)
			var want []string
			for _, w := range c.want {
				want = append(want, "x.json:"+w)
			}
			if !slices.Equal(got, want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestParsePositions(t *testing.T) {
	src := "{\n  \"sections\": {\n    \"s\": {\"keys\": [\"a:{id}\", \"b\"], \"revision\": \"r\"}\n  },\n" +
		"  \"rules\": [\n    {\"name\": \"r\", \"tables\": [\"t\"], \"invalidate\": [\"s\"]}\n  ],\n" +
		"  \"invariants\": [\n    {\"name\": \"i\", \"table\": \"t\", \"when_changed\": [\"a\"], \"require_changed\": [\"b\"]}\n  ]\n}\n"
	f, err := rules.Parse("x.json", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Sections[0]
	for _, c := range []struct {
		what      string
		got, want rules.Pos
	}{
		{"section", s.Pos, rules.Pos{Line: 3, Col: 5}},
		{"first key", s.Keys[0].Pos, rules.Pos{Line: 3, Col: 20}},
		{"second key", s.Keys[1].Pos, rules.Pos{Line: 3, Col: 30}},
		{"revision", s.Revision.Pos, rules.Pos{Line: 3, Col: 48}},
		{"rule", f.Rules[0].Pos, rules.Pos{Line: 6, Col: 5}},
		{"invariant", f.Invariants[0].Pos, rules.Pos{Line: 9, Col: 5}},
	} {
		if c.got != c.want {
			t.Errorf("%s at %v, want %v", c.what, c.got, c.want)
		}
	}
	if f.Section("nope") != nil {
		t.Error(`Section("nope") is not nil`)
	}
}

func TestParseDecodesStrings(t *testing.T) {
	src := `{"sections": {"s\u00e9\n": {"keys": ["a\"b\\c\/d\b\f\n\r\t", "\ud83d\ude00:{id}"]}},` +
		`"rules": [{"name": "r", "tables": ["t"], "invalidate": ["s\u00e9\n"]}]}`
	f, err := rules.Parse("x.json", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Sections[0]
	if s.Name != "sé\n" {
		t.Errorf("name %q", s.Name)
	}
	if got := s.Keys[0].Literal(); got != "a\"b\\c/d\b\f\n\r\t" {
		t.Errorf("escapes decode to %q", got)
	}
	if got := s.Keys[1].Pattern(); got != "\U0001F600:*" {
		t.Errorf("surrogate pair decodes to %q", got)
	}
}

func TestParseErrorFormat(t *testing.T) {
	pe := &rules.ParseError{Problems: []rules.Problem{
		{File: "a.json", Pos: rules.Pos{Line: 3, Col: 7}, Msg: "first"},
		{File: "a.json", Msg: "not tied to a place"},
	}}
	if got, want := pe.Error(), "a.json:3:7: first\na.json: not tied to a place"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join("testdata", "good", "minimal.json")
	rs, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if rs.File().Name != path || !slices.Equal(rs.Tables(), []string{"public.t"}) {
		t.Errorf("loaded %q with tables %v", rs.File().Name, rs.Tables())
	}

	_, err = rules.Load(filepath.Join("testdata", "no-such-file.json"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "read rules: ") {
		t.Errorf("missing file: %v", err)
	}

	bad := filepath.Join("testdata", "bad", "references.json")
	_, err = rules.Load(bad)
	var pe *rules.ParseError
	if !errors.As(err, &pe) || pe.Problems[0].File != bad {
		t.Errorf("bad file: %v", err)
	}
}

// The corpus is worth nothing if its positions drift from what an editor
// shows: check a few against the text by hand-independent means.
func TestBadCorpusPointsAtTheNamedToken(t *testing.T) {
	for _, c := range []struct {
		file, msg, token string
	}{
		{"unknown-fields.json", `unknown field "key"`, `"key"`},
		{"references.json", `unknown section "summary.cor"`, `"summary.cor"`},
		{"references.json", `duplicate name "a"`, `"a"`},
		{"values.json", `unknown operation "upsert"`, `"upsert"`},
		{"values.json", `unknown severity "loud"`, `"loud"`},
		{"many-problems.json", `"colums"`, `"colums"`},
		{"many-problems.json", `section "orphan" is not invalidated`, `"orphan"`},
		{"braces.json", `template "run:{}"`, `"run:{}"`},
	} {
		path := filepath.Join("testdata", "bad", c.file)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = rules.Parse(path, data)
		var pe *rules.ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("%s: %v", c.file, err)
		}
		i := slices.IndexFunc(pe.Problems, func(p rules.Problem) bool { return strings.Contains(p.Msg, c.msg) })
		if i < 0 {
			t.Errorf("%s: no problem mentions %s", c.file, c.msg)
			continue
		}
		p := pe.Problems[i]
		line := strings.Split(string(data), "\n")[p.Pos.Line-1]
		at := string([]rune(line)[p.Pos.Col-1:])
		if !strings.HasPrefix(at, c.token) {
			t.Errorf("%s: %q points at %s, want %s", c.file, p.Msg, strconv.Quote(at[:min(len(at), 20)]), c.token)
		}
		if !utf8.ValidString(at) {
			t.Errorf("%s: column splits a character", c.file)
		}
	}
}
