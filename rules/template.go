package rules

import (
	"fmt"
	"strings"
)

// A Template is a cache key with {column} placeholders, such as
// "nodb:{run_id}:climate". "{{" and "}}" stand for literal braces.
type Template struct {
	// Text is the template as written in the rules file.
	Text string
	// Pos is where the template appears in the rules file.
	Pos Pos

	parts   []string // literal text; parts[i] precedes the i-th placeholder
	columns []string // placeholder column names, in order, repeats included
	pattern string
}

// ParseTemplate parses a key template.
func ParseTemplate(text string) (*Template, error) {
	t := &Template{Text: text}
	var lit strings.Builder
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '{' && i+1 < len(text) && text[i+1] == '{':
			lit.WriteByte('{')
			i++
		case c == '}' && i+1 < len(text) && text[i+1] == '}':
			lit.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexAny(text[i+1:], "{}")
			if end < 0 || text[i+1+end] == '{' {
				return nil, fmt.Errorf("template %q: unbalanced '{' at offset %d", text, i)
			}
			name := text[i+1 : i+1+end]
			if strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("template %q: empty placeholder {} at offset %d names no column", text, i)
			}
			if strings.TrimSpace(name) != name {
				return nil, fmt.Errorf("template %q: placeholder {%s} has surrounding spaces", text, name)
			}
			t.parts = append(t.parts, lit.String())
			lit.Reset()
			t.columns = append(t.columns, name)
			i += end + 1
		case c == '}':
			return nil, fmt.Errorf("template %q: unbalanced '}' at offset %d (write }} for a literal brace)", text, i)
		default:
			lit.WriteByte(c)
		}
	}
	t.parts = append(t.parts, lit.String())
	var p strings.Builder
	for i, part := range t.parts {
		p.WriteString(GlobEscape(part))
		if i < len(t.columns) {
			p.WriteByte('*')
		}
	}
	t.pattern = p.String()
	return t, nil
}

// MustTemplate is ParseTemplate that panics on error, for tests and
// constants.
func MustTemplate(text string) *Template {
	t, err := ParseTemplate(text)
	if err != nil {
		panic(err)
	}
	return t
}

// Columns returns the column of each placeholder in order, repeats included.
func (t *Template) Columns() []string { return t.columns }

// IsLiteral reports whether the template has no placeholders.
func (t *Template) IsLiteral() bool { return len(t.columns) == 0 }

// Literal returns the key of a template without placeholders, with escaped
// braces resolved.
func (t *Template) Literal() string { return t.parts[0] }

// Render appends the key for the given placeholder values (one per entry of
// Columns) to dst.
func (t *Template) Render(dst []byte, values [][]byte) []byte {
	for i, part := range t.parts {
		dst = append(dst, part...)
		if i < len(t.columns) {
			dst = append(dst, values[i]...)
		}
	}
	return dst
}

// Pattern returns the Redis SCAN pattern matching every key the template can
// render: the literal parts glob-escaped, each placeholder a '*'.
func (t *Template) Pattern() string { return t.pattern }

// String returns the template's text.
func (t *Template) String() string { return t.Text }

// GlobEscape escapes the characters Redis glob patterns treat specially, so
// that the pattern matches s alone. SCAN MATCH, ACL key (~) and channel (&)
// patterns share this syntax.
func GlobEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
