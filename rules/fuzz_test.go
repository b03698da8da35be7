package rules_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

func FuzzParse(f *testing.F) {
	for _, dir := range []string{"good", "bad"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*.json"))
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := rules.Parse("fuzz.json", data)
		if err != nil {
			if _, ok := err.(*rules.ParseError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if _, err := rules.Compile(file); err != nil {
			t.Fatalf("a parsed file does not compile: %v", err)
		}
	})
}

func FuzzTemplate(f *testing.F) {
	for _, s := range []string{"k", "nodb:{run_id}:climate", "{{x}}:{a}:{b}", "a*b?[c]\\{d}", "{a}{a}", "x}}{{y", "{", "}", "{}"} {
		f.Add(s, "1", "two words*?[]\\")
	}
	f.Fuzz(func(t *testing.T, text, v1, v2 string) {
		tpl, err := rules.ParseTemplate(text)
		if err != nil {
			return
		}
		vals := make([][]byte, len(tpl.Columns()))
		for i := range vals {
			if i%2 == 0 {
				vals[i] = []byte(v1)
			} else {
				vals[i] = []byte(v2)
			}
		}
		key := string(tpl.Render(nil, vals))
		if want := expand(text, vals); key != want {
			t.Fatalf("Render(%q) = %q, want %q", text, key, want)
		}
		if !globMatch(tpl.Pattern(), key) {
			t.Fatalf("pattern %q of %q does not match its key %q", tpl.Pattern(), text, key)
		}
		if tpl.IsLiteral() && tpl.Literal() != key {
			t.Fatalf("Literal() = %q, key %q", tpl.Literal(), key)
		}
	})
}

// expand is a reference implementation of template rendering.
func expand(text string, vals [][]byte) string {
	var b strings.Builder
	n := 0
	for i := 0; i < len(text); i++ {
		switch {
		case strings.HasPrefix(text[i:], "{{"):
			b.WriteByte('{')
			i++
		case strings.HasPrefix(text[i:], "}}"):
			b.WriteByte('}')
			i++
		case text[i] == '{':
			i += strings.IndexByte(text[i:], '}')
			b.Write(vals[n])
			n++
		default:
			b.WriteByte(text[i])
		}
	}
	return b.String()
}

// globMatch implements Redis's glob matching (stringmatchlen): *, ?,
// [...] with ranges and ^, and backslash escapes.
func globMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 1 && pattern[1] == '*' {
				pattern = pattern[1:]
			}
			if len(pattern) == 1 {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if globMatch(pattern[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if len(s) == 0 {
				return false
			}
			s = s[1:]
		case '[':
			if len(s) == 0 {
				return false
			}
			pattern = pattern[1:]
			not := len(pattern) > 0 && pattern[0] == '^'
			if not {
				pattern = pattern[1:]
			}
			match := false
			for len(pattern) > 0 && pattern[0] != ']' {
				switch {
				case pattern[0] == '\\' && len(pattern) >= 2:
					pattern = pattern[1:]
					if pattern[0] == s[0] {
						match = true
					}
				case len(pattern) >= 3 && pattern[1] == '-':
					lo, hi := pattern[0], pattern[2]
					if lo > hi {
						lo, hi = hi, lo
					}
					if s[0] >= lo && s[0] <= hi {
						match = true
					}
					pattern = pattern[2:]
				default:
					if pattern[0] == s[0] {
						match = true
					}
				}
				pattern = pattern[1:]
			}
			if not {
				match = !match
			}
			if !match {
				return false
			}
			s = s[1:]
			if len(pattern) == 0 {
				return len(s) == 0
			}
		case '\\':
			if len(pattern) >= 2 {
				pattern = pattern[1:]
			}
			fallthrough
		default:
			if len(s) == 0 || pattern[0] != s[0] {
				return false
			}
			s = s[1:]
		}
		pattern = pattern[1:]
	}
	return len(s) == 0
}

func TestGlobMatch(t *testing.T) {
	for _, c := range []struct {
		p, s string
		want bool
	}{
		{"a*", "abc", true}, {"a\\*", "a*", true}, {"a\\*", "ab", false}, {"?b", "ab", true},
		{"[a-c]x", "bx", true}, {"[^a]x", "ax", false}, {"\\[x\\]", "[x]", true}, {"*:v*", "f:v2", true},
	} {
		if got := globMatch(c.p, c.s); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v", c.p, c.s, got)
		}
	}
}
