package replication

import "testing"

// The replication connection takes values only inside the SQL text.
// Expected values are what PostgreSQL's quote_literal and quote_ident
// return for the same input.
func TestQuoting(t *testing.T) {
	t.Parallel()
	literals := []struct{ in, want string }{
		{"cdcd", "'cdcd'"},
		{"it's", "'it''s'"},
		{"", "''"},
		{`a\b`, `E'a\\b'`},   // reads the same with standard_conforming_strings off
		{`o'\`, `E'o''\\'`},  // a trailing backslash cannot escape the closing quote
		{`"pub"`, `'"pub"'`}, // an identifier quoted for publication_names
		{"naïve", "'naïve'"},
	}
	for _, c := range literals {
		if got := quoteLiteral(c.in); got != c.want {
			t.Errorf("quoteLiteral(%q) = %s, want %s", c.in, got, c.want)
		}
	}
	tables := []struct {
		in   []string
		want string
	}{
		{[]string{"public.runs"}, `"public"."runs"`},
		{[]string{"public.runs", "app.Topics"}, `"public"."runs", "app"."Topics"`},
		{[]string{`s.a"b`}, `"s"."a""b"`},
		{[]string{"s.a.b"}, `"s"."a.b"`}, // the first dot separates the schema
		{[]string{"runs"}, `"runs"`},
	}
	for _, c := range tables {
		if got := tableList(c.in); got != c.want {
			t.Errorf("tableList(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}
