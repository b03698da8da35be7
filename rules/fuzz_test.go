package rules_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// FuzzParse: Parse never panics, fails only with a *ParseError whose
// problems are placed and in file order, and whatever it accepts compiles.
func FuzzParse(f *testing.F) {
	n := 0
	for _, dir := range []string{"good", "bad"} {
		files, err := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
			n++
		}
	}
	if n == 0 {
		f.Fatal("no corpus to seed from")
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := rules.Parse("fuzz.json", data)
		if err != nil {
			if file != nil {
				t.Fatal("Parse returned a file along with an error")
			}
			var pe *rules.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if len(pe.Problems) == 0 {
				t.Fatal("a ParseError with no problems")
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			for i, p := range pe.Problems {
				if p.File != "fuzz.json" || p.Pos.Line < 1 || p.Pos.Line > lines || p.Pos.Col < 1 || p.Msg == "" {
					t.Fatalf("problem %d is not placed in the file: %+v", i, p)
				}
				if i > 0 {
					q := pe.Problems[i-1].Pos
					if q.Line > p.Pos.Line || (q.Line == p.Pos.Line && q.Col > p.Pos.Col) {
						t.Fatalf("problems out of file order:\n%v", err)
					}
				}
			}
			return
		}
		if file == nil {
			t.Fatal("Parse returned neither a file nor an error")
		}
		rs, err := rules.Compile(file)
		if err != nil {
			t.Fatalf("a parsed file does not compile: %v", err)
		}
		// Every template of an accepted file parsed, so it has a pattern.
		for _, s := range file.Sections {
			for _, k := range s.Keys {
				if k.Pattern() == "" && k.Text != "" {
					t.Fatalf("key %q has no pattern", k.Text)
				}
			}
		}
		// The gap plan announces itself on every channel, in valid JSON
		// whatever the section names.
		p := rs.Everything("fuzz", replication.Commit{})
		for _, m := range p.Messages {
			var msg struct{ Gap bool }
			if err := json.Unmarshal(m.Payload, &msg); err != nil || !msg.Gap {
				t.Fatalf("gap message %s: %v", m.Payload, err)
			}
		}
	})
}

// FuzzTemplate: ParseTemplate accepts exactly the templates of the
// documented grammar; Render agrees with a reference expansion; the key a
// template renders matches its Pattern() under Redis's glob rules, and
// changing the literal text around it breaks the match.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{
		"k", "nodb:{run_id}:climate", "{{x}}:{a}:{b}", `a*b?[c]\{d}`, "{a}{a}", "x}}{{y", "{{{id}}}",
		"[{a}]", `\{a}\`, "*{a}*", "?{a}?", "{", "}", "{}", "{ a}", "{a{b}}", "{{a}", "", "é{ü}ß",
	} {
		f.Add(s, "1", `two words*?[]\`)
	}
	f.Fuzz(func(t *testing.T, text, v1, v2 string) {
		lits, cols, ok := referenceTemplate(text)
		tpl, err := rules.ParseTemplate(text)
		if (err == nil) != ok {
			t.Fatalf("ParseTemplate(%q): error %v, but the grammar says valid=%v", text, err, ok)
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), "template ") {
				t.Fatalf("error does not name the template: %v", err)
			}
			return
		}
		if !slices.Equal(tpl.Columns(), cols) {
			t.Fatalf("Columns() = %q, want %q", tpl.Columns(), cols)
		}
		if tpl.IsLiteral() != (len(cols) == 0) {
			t.Fatalf("IsLiteral() = %v with columns %q", tpl.IsLiteral(), cols)
		}
		vals := make([][]byte, len(cols))
		var want strings.Builder
		for i := range cols {
			if i%2 == 0 {
				vals[i] = []byte(v1)
			} else {
				vals[i] = []byte(v2)
			}
			want.WriteString(lits[i])
			want.Write(vals[i])
		}
		want.WriteString(lits[len(cols)])
		key := string(tpl.Render([]byte("pre"), vals))
		if key != "pre"+want.String() {
			t.Fatalf("Render(%q, %q, %q) = %q, want %q", text, v1, v2, key, "pre"+want.String())
		}
		key = key[len("pre"):]
		if tpl.IsLiteral() && tpl.Literal() != key {
			t.Fatalf("Literal() = %q, key %q", tpl.Literal(), key)
		}
		pattern := tpl.Pattern()
		// Redis's matcher never matches the empty string (SCAN special-
		// cases the pattern "*" itself); only a template of nothing but
		// placeholders, all empty, renders it.
		if key != "" && !redisGlobMatch(pattern, key) {
			t.Fatalf("pattern %q of %q does not match its key %q", pattern, text, key)
		}
		// Changing a byte of the leading or trailing literal text gives a
		// key the template cannot produce; the pattern must not match it.
		if first := lits[0]; first != "" {
			bad := []byte(key)
			bad[0] ^= 0x01
			if redisGlobMatch(pattern, string(bad)) {
				t.Fatalf("pattern %q of %q matches %q", pattern, text, bad)
			}
		}
		if last := lits[len(lits)-1]; last != "" && len(cols) > 0 {
			bad := []byte(key)
			bad[len(bad)-1] ^= 0x01
			if redisGlobMatch(pattern, string(bad)) {
				t.Fatalf("pattern %q of %q matches %q", pattern, text, bad)
			}
		}
		if tpl.IsLiteral() && redisGlobMatch(pattern, key+"x") {
			t.Fatalf("pattern %q of literal %q matches a longer key", pattern, text)
		}
	})
}

// referenceTemplate parses a template by the grammar in docs/rules.md,
// independently of ParseTemplate: "{{" and "}}" are literal braces, {name}
// is a placeholder whose name is non-empty, has no braces and no
// surrounding spaces, and any other brace is an error. It returns the
// literal text before each placeholder and after the last, and the names.
func referenceTemplate(text string) (lits, cols []string, ok bool) {
	var lit strings.Builder
	rest := text
	for rest != "" {
		switch {
		case strings.HasPrefix(rest, "{{"):
			lit.WriteByte('{')
			rest = rest[2:]
		case strings.HasPrefix(rest, "}}"):
			lit.WriteByte('}')
			rest = rest[2:]
		case rest[0] == '}':
			return nil, nil, false
		case rest[0] == '{':
			name, after, closed := strings.Cut(rest[1:], "}")
			if !closed || strings.Contains(name, "{") || strings.TrimSpace(name) == "" || strings.TrimSpace(name) != name {
				return nil, nil, false
			}
			lits = append(lits, lit.String())
			lit.Reset()
			cols = append(cols, name)
			rest = after
		default:
			lit.WriteByte(rest[0])
			rest = rest[1:]
		}
	}
	return append(lits, lit.String()), cols, true
}

// redisGlobMatch is Redis's stringmatchlen (util.c, case-sensitive), which
// SCAN MATCH and KEYS use: '*', '?', '[...]' with '^' and ranges, and '\'
// escaping the next character, inside a class too. Like Redis, an empty
// string matches nothing, and an unterminated class runs to the end.
func redisGlobMatch(pattern, s string) bool {
	skipLonger := false
	return globMatch(pattern, s, &skipLonger, 0)
}

func globMatch(p, s string, skipLonger *bool, nesting int) bool {
	if nesting > 1000 {
		return false
	}
	for len(p) > 0 && len(s) > 0 {
		switch p[0] {
		case '*':
			for len(p) > 1 && p[1] == '*' {
				p = p[1:]
			}
			if len(p) == 1 {
				return true
			}
			for len(s) > 0 {
				if globMatch(p[1:], s, skipLonger, nesting+1) {
					return true
				}
				if *skipLonger {
					return false
				}
				s = s[1:]
			}
			// The rest of the pattern matches nowhere in the rest of the
			// string, so no earlier '*' can help either.
			*skipLonger = true
			return false
		case '?':
			s = s[1:]
			p = p[1:]
		case '[':
			p = p[1:]
			not := len(p) > 0 && p[0] == '^'
			if not {
				p = p[1:]
			}
			match := false
		class:
			for {
				switch {
				case len(p) >= 2 && p[0] == '\\':
					p = p[1:]
					if p[0] == s[0] {
						match = true
					}
				case len(p) == 0:
					break class // unterminated: the class ends with the pattern
				case p[0] == ']':
					break class
				case len(p) >= 3 && p[1] == '-':
					lo, hi := p[0], p[2]
					if lo > hi {
						lo, hi = hi, lo
					}
					if s[0] >= lo && s[0] <= hi {
						match = true
					}
					p = p[2:]
				case p[0] == s[0]:
					match = true
				}
				p = p[1:]
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			s = s[1:]
			if len(p) > 0 {
				p = p[1:] // the ']'
			}
		case '\\':
			if len(p) >= 2 {
				p = p[1:]
			}
			fallthrough
		default:
			if p[0] != s[0] {
				return false
			}
			s = s[1:]
			p = p[1:]
		}
		if len(s) == 0 {
			for len(p) > 0 && p[0] == '*' {
				p = p[1:]
			}
			break
		}
	}
	return len(p) == 0 && len(s) == 0
}

func TestRedisGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"abc", "abc", true}, {"abc", "abd", false}, {"abc", "ab", false}, {"ab", "abc", false},
		{"*", "anything", true}, {"*", "", false}, {"", "", true}, {"", "a", false},
		{"a*", "a", true}, {"a*", "abc", true}, {"a*c", "abbbc", true}, {"a*c", "abbb", false},
		{"a**c", "ac", true}, {"*:*", ":", true}, {"*:*:*", "a:b", false}, {"*a*b*c", "xaybzc", true},
		{"?", "a", true}, {"?", "", false}, {"?b", "ab", true}, {"a?", "a", false},
		{"[abc]", "b", true}, {"[abc]", "d", false}, {"[^abc]", "d", true}, {"[^abc]", "a", false},
		{"[a-c]x", "bx", true}, {"[c-a]x", "bx", true}, {"[a-c]x", "dx", false},
		{`[\]]`, "]", true}, {`[\-]`, "-", true}, {"[]a]", "a", false},
		{"[ab", "a", true}, {"[ab", "b", true}, {"[ab", "c", false},
		{`a\*`, "a*", true}, {`a\*`, "ab", false}, {`a\*`, "a", false}, {`\?`, "?", true}, {`\?`, "x", false},
		{`\[x\]`, "[x]", true}, {`\[x\]`, "x", false}, {`\\`, `\`, true}, {`\\*`, `\abc`, true},
		{`a\`, `a\`, true}, {`\a`, "a", true},
		{`k:\*:*`, "k:*:1", true}, {`k:\*:*`, "k:x:1", false},
		{strings.Repeat("*a", 30) + "b", strings.Repeat("a", 60), false},
	} {
		if got := redisGlobMatch(c.p, c.s); got != c.want {
			t.Errorf("redisGlobMatch(%q, %q) = %v, want %v", c.p, c.s, got, c.want)
		}
	}
}

func TestReferenceTemplate(t *testing.T) {
	for _, c := range []struct {
		text       string
		lits, cols []string
		ok         bool
	}{
		{"a:{b}:c", []string{"a:", ":c"}, []string{"b"}, true},
		{"{{a}}", []string{"{a}"}, nil, true},
		{"{{{a}}}", []string{"{", "}"}, []string{"a"}, true},
		{"{a}{b}", []string{"", "", ""}, []string{"a", "b"}, true},
		{"{a", nil, nil, false}, {"a}", nil, nil, false}, {"{}", nil, nil, false}, {"{ a}", nil, nil, false},
		{"{a{b}}", nil, nil, false},
	} {
		lits, cols, ok := referenceTemplate(c.text)
		if ok != c.ok || !slices.Equal(lits, c.lits) || !slices.Equal(cols, c.cols) {
			t.Errorf("referenceTemplate(%q) = %q, %q, %v", c.text, lits, cols, ok)
		}
	}
}
