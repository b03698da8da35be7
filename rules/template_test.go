package rules_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

func TestTemplate(t *testing.T) {
	cases := []struct {
		text    string
		columns []string
		literal string // when the template has no placeholder
		pattern string
		values  []string // one per column
		key     string
	}{
		{text: "state:summary:core", literal: "state:summary:core", pattern: "state:summary:core", key: "state:summary:core"},
		{text: "nodb:{run_id}:climate", columns: []string{"run_id"}, pattern: "nodb:*:climate",
			values: []string{"42"}, key: "nodb:42:climate"},
		{text: "{id}", columns: []string{"id"}, pattern: "*", values: []string{"7"}, key: "7"},
		{text: "impact:{id}:v{version}", columns: []string{"id", "version"}, pattern: "impact:*:v*",
			values: []string{"3", "12"}, key: "impact:3:v12"},
		{text: "{a}{b}", columns: []string{"a", "b"}, pattern: "**", values: []string{"x", "y"}, key: "xy"},
		{text: "pair:{id}:{id}", columns: []string{"id", "id"}, pattern: "pair:*:*",
			values: []string{"5", "5"}, key: "pair:5:5"},
		{text: "{a}:{b}:{a}", columns: []string{"a", "b", "a"}, pattern: "*:*:*",
			values: []string{"1", "2", "1"}, key: "1:2:1"},
		{text: "{weird name}", columns: []string{"weird name"}, pattern: "*", values: []string{"v"}, key: "v"},
		{text: "{Ünïcode}:é", columns: []string{"Ünïcode"}, pattern: "*:é", values: []string{"ß"}, key: "ß:é"},

		// Escaped braces.
		{text: "{{literal}}", literal: "{literal}", pattern: "{literal}", key: "{literal}"},
		{text: "{{", literal: "{", pattern: "{", key: "{"},
		{text: "}}", literal: "}", pattern: "}", key: "}"},
		{text: "x}}{{y", literal: "x}{y", pattern: "x}{y", key: "x}{y"},
		{text: "{{{id}}}", columns: []string{"id"}, pattern: "{*}", values: []string{"9"}, key: "{9}"},
		{text: "{{{{id}}}}", literal: "{{id}}", pattern: "{{id}}", key: "{{id}}"},
		{text: "json:{{{a}}}:{{b}}", columns: []string{"a"}, pattern: "json:{*}:{b}", values: []string{"1"}, key: "json:{1}:{b}"},

		// Glob characters in literal parts are escaped in the pattern,
		// never in the key; values go in as they are.
		{text: "a*b", literal: "a*b", pattern: `a\*b`, key: "a*b"},
		{text: "what?", literal: "what?", pattern: `what\?`, key: "what?"},
		{text: "[x]", literal: "[x]", pattern: `\[x\]`, key: "[x]"},
		{text: `back\slash`, literal: `back\slash`, pattern: `back\\slash`, key: `back\slash`},
		{text: `*?[]\:{id}:\]`, columns: []string{"id"}, pattern: `\*\?\[\]\\:*:\\\]`,
			values: []string{"v"}, key: `*?[]\:v:\]`},
		{text: "^-!{id}", columns: []string{"id"}, pattern: "^-!*", values: []string{"v"}, key: "^-!v"},
		{text: "k:{id}", columns: []string{"id"}, pattern: "k:*", values: []string{`*?[a-z]\`}, key: `k:*?[a-z]\`},
		{text: "k:{id}", columns: []string{"id"}, pattern: "k:*", values: []string{""}, key: "k:"},
		{text: "k:{id}", columns: []string{"id"}, pattern: "k:*", values: []string{"a\nb\x00c"}, key: "k:a\nb\x00c"},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			tpl, err := rules.ParseTemplate(c.text)
			if err != nil {
				t.Fatal(err)
			}
			if tpl.Text != c.text || tpl.String() != c.text {
				t.Errorf("Text %q, String() %q", tpl.Text, tpl.String())
			}
			if got := tpl.Columns(); !slices.Equal(got, c.columns) {
				t.Errorf("Columns() = %q, want %q", got, c.columns)
			}
			if got, want := tpl.IsLiteral(), len(c.columns) == 0; got != want {
				t.Errorf("IsLiteral() = %v", got)
			}
			if tpl.IsLiteral() && tpl.Literal() != c.literal {
				t.Errorf("Literal() = %q, want %q", tpl.Literal(), c.literal)
			}
			if got := tpl.Pattern(); got != c.pattern {
				t.Errorf("Pattern() = %q, want %q", got, c.pattern)
			}
			vals := make([][]byte, len(c.values))
			for i, v := range c.values {
				vals[i] = []byte(v)
			}
			if got := string(tpl.Render(nil, vals)); got != c.key {
				t.Errorf("Render = %q, want %q", got, c.key)
			}
			// Render appends.
			if got := string(tpl.Render([]byte("prefix|"), vals)); got != "prefix|"+c.key {
				t.Errorf("Render onto a prefix = %q", got)
			}
			if !redisGlobMatch(tpl.Pattern(), c.key) {
				t.Errorf("Pattern() %q does not match the key %q", tpl.Pattern(), c.key)
			}
		})
	}
}

// The pattern must not match keys the template cannot produce: escaping
// that is missing (a '?' left as a wildcard) or excessive (a '\' left in
// the text) shows here.
func TestTemplatePatternMatchesOnlyItsKeys(t *testing.T) {
	cases := []struct {
		text     string
		match    []string
		notMatch []string
	}{
		{"what?", []string{"what?"}, []string{"whats", "what", "what?!"}},
		{"a*b", []string{"a*b"}, []string{"ab", "axb", "a**b"}},
		{"[x]:{id}", []string{"[x]:1", "[x]:", "[x]:[y]"}, []string{"x:1", "[y]:1", "x]:1"}},
		{`dir\{id}`, []string{`dir\1`, `dir\`}, []string{"dir1", "dir/1", `dir1\`}},
		{"{id}:end", []string{"1:end", ":end", "a:b:end"}, []string{"1:en", "1:endx", "1;end"}},
		{"{{{id}}}", []string{"{1}", "{}", "{{}}"}, []string{"1", "{1", "1}"}},
		{"v{a}:{b}", []string{"v1:2", "v:", "v::::"}, []string{"1:2", "v12", "w1:2"}},
	}
	for _, c := range cases {
		tpl := rules.MustTemplate(c.text)
		for _, s := range c.match {
			if !redisGlobMatch(tpl.Pattern(), s) {
				t.Errorf("%q: pattern %q does not match %q", c.text, tpl.Pattern(), s)
			}
		}
		for _, s := range c.notMatch {
			if redisGlobMatch(tpl.Pattern(), s) {
				t.Errorf("%q: pattern %q matches %q, which the template cannot produce", c.text, tpl.Pattern(), s)
			}
		}
	}
}

func TestTemplateErrors(t *testing.T) {
	cases := []struct {
		text string
		want string
	}{
		{"a:{id", `template "a:{id": unbalanced '{' at offset 2`},
		{"{", `template "{": unbalanced '{' at offset 0`},
		{"{{{", `template "{{{": unbalanced '{' at offset 2`},
		{"a{b{c}}", `template "a{b{c}}": unbalanced '{' at offset 1`},
		{"a}", `template "a}": unbalanced '}' at offset 1 (write }} for a literal brace)`},
		{"}", `template "}": unbalanced '}' at offset 0 (write }} for a literal brace)`},
		{"}}}", `template "}}}": unbalanced '}' at offset 2 (write }} for a literal brace)`},
		{"{a}}}}", `template "{a}}}}": unbalanced '}' at offset 5 (write }} for a literal brace)`},
		{"{{a}", `template "{{a}": unbalanced '}' at offset 3 (write }} for a literal brace)`},
		{"{}", `template "{}": empty placeholder {} at offset 0 names no column`},
		{"x:{}:{id}", `template "x:{}:{id}": empty placeholder {} at offset 2 names no column`},
		{"{ }", `template "{ }": empty placeholder {} at offset 0 names no column`},
		{"{ id}", `template "{ id}": placeholder { id} has surrounding spaces`},
		{"{id }", `template "{id }": placeholder {id } has surrounding spaces`},
		{"{\tid}", `template "{\tid}": placeholder {` + "\t" + `id} has surrounding spaces`},
	}
	for _, c := range cases {
		t.Run(c.text, func(t *testing.T) {
			tpl, err := rules.ParseTemplate(c.text)
			if err == nil {
				t.Fatalf("parsed as %q with columns %q", tpl.Pattern(), tpl.Columns())
			}
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
		})
	}
}

func TestMustTemplate(t *testing.T) {
	if got := rules.MustTemplate("a:{b}").Pattern(); got != "a:*" {
		t.Errorf("MustTemplate: %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("MustTemplate of a bad template did not panic")
		}
	}()
	rules.MustTemplate("a:{b")
}
