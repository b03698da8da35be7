package rules

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The rules file is JSON, read by a small parser that keeps the position of
// every value so that each problem can be reported as FILE:LINE:COL.

type kind uint8

const (
	kindNull kind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k kind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "a list", "an object"}[k]
}

type field struct {
	name string
	pos  Pos // of the name
	val  *node
}

type node struct {
	kind   kind
	pos    Pos
	str    string // string value, or the number's text
	fields []field
	elems  []*node
}

type syntaxError struct {
	pos Pos
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%d:%d: %s", e.pos.Line, e.pos.Col, e.msg) }

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 64

type scanner struct {
	data      []byte
	off       int
	line      int
	lineStart int
}

func parseJSON(data []byte) (*node, error) {
	s := &scanner{data: data, line: 1}
	if len(data) >= 3 && string(data[:3]) == "\uFEFF" {
		s.off, s.lineStart = 3, 3
	}
	s.skipSpace()
	n, err := s.value(0)
	if err != nil {
		return nil, err
	}
	s.skipSpace()
	if s.off < len(s.data) {
		return nil, s.errorf("unexpected %s after the end of the document", s.describe())
	}
	return n, nil
}

func (s *scanner) pos() Pos {
	col := utf8.RuneCount(s.data[s.lineStart:s.off]) + 1
	return Pos{Line: s.line, Col: col}
}

func (s *scanner) errorf(format string, args ...any) error {
	return &syntaxError{pos: s.pos(), msg: fmt.Sprintf(format, args...)}
}

func (s *scanner) describe() string {
	if s.off >= len(s.data) {
		return "end of file"
	}
	r, _ := utf8.DecodeRune(s.data[s.off:])
	return strconv.QuoteRune(r)
}

func (s *scanner) skipSpace() {
	for s.off < len(s.data) {
		switch s.data[s.off] {
		case '\n':
			s.off++
			s.line++
			s.lineStart = s.off
		case ' ', '\t', '\r':
			s.off++
		default:
			return
		}
	}
}

func (s *scanner) value(depth int) (*node, error) {
	if depth > maxDepth {
		return nil, s.errorf("nesting deeper than %d levels", maxDepth)
	}
	if s.off >= len(s.data) {
		return nil, s.errorf("unexpected end of file, expected a value")
	}
	pos := s.pos()
	switch c := s.data[s.off]; {
	case c == '{':
		return s.object(pos, depth)
	case c == '[':
		return s.array(pos, depth)
	case c == '"':
		str, err := s.string()
		if err != nil {
			return nil, err
		}
		return &node{kind: kindString, pos: pos, str: str}, nil
	case c == 't':
		return s.literal(pos, "true", kindBool)
	case c == 'f':
		return s.literal(pos, "false", kindBool)
	case c == 'n':
		return s.literal(pos, "null", kindNull)
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number(pos)
	default:
		return nil, s.errorf("unexpected %s, expected a value", s.describe())
	}
}

func (s *scanner) literal(pos Pos, word string, k kind) (*node, error) {
	if !strings.HasPrefix(string(s.data[s.off:min(len(s.data), s.off+len(word))]), word) {
		return nil, s.errorf("unexpected %s, expected a value", s.describe())
	}
	s.off += len(word)
	return &node{kind: k, pos: pos, str: word}, nil
}

func (s *scanner) number(pos Pos) (*node, error) {
	// Take the whole run of characters that could belong to a number or to
	// a word glued to it, so that "0x10" or "1.2.3" is reported as one
	// malformed number. In valid JSON none of them may follow a number, so
	// the run never takes more than the number.
	start := s.off
	for s.off < len(s.data) && isNumberRun(s.data[s.off]) {
		s.off++
	}
	text := string(s.data[start:s.off])
	if !validNumber(text) {
		return nil, &syntaxError{pos: pos, msg: fmt.Sprintf("malformed number %q", text)}
	}
	// encoding/json refuses a number beyond float64 too; accepting it here
	// would turn a typo into infinity.
	if _, err := strconv.ParseFloat(text, 64); err != nil {
		return nil, &syntaxError{pos: pos, msg: fmt.Sprintf("number %s is out of range", text)}
	}
	return &node{kind: kindNumber, pos: pos, str: text}, nil
}

func isNumberRun(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '+' || c == '-' || c == '_'
}

// validNumber reports whether text is a number by RFC 8259's grammar:
// an optional minus, an integer part without leading zeros, an optional
// fraction with at least one digit, an optional exponent with at least one
// digit. strconv.ParseFloat alone would also take "01", "1.", "-.5", "+1",
// "0x10", "Inf" and "1_000".
func validNumber(text string) bool {
	i := 0
	digits := func() int {
		n := 0
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(text) && text[i] == '-' {
		i++
	}
	switch {
	case i < len(text) && text[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(text) && text[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(text) && (text[i] == 'e' || text[i] == 'E') {
		i++
		if i < len(text) && (text[i] == '+' || text[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(text)
}

func (s *scanner) string() (string, error) {
	s.off++ // opening quote
	var b strings.Builder
	for {
		if s.off >= len(s.data) {
			return "", s.errorf("unterminated string")
		}
		c := s.data[s.off]
		switch {
		case c == '"':
			s.off++
			return b.String(), nil
		case c == '\\':
			if s.off+1 >= len(s.data) {
				return "", s.errorf("unterminated string")
			}
			esc := s.data[s.off+1]
			s.off += 2
			switch esc {
			case '"', '\\', '/':
				b.WriteByte(esc)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := s.hex4()
				if err != nil {
					return "", err
				}
				b.WriteRune(s.surrogatePair(r))
			default:
				s.off -= 2
				return "", s.errorf("invalid escape \\%c in string", esc)
			}
		case c == '\n':
			return "", s.errorf("unterminated string (a line break inside a string is written \\n)")
		case c < 0x20:
			return "", s.errorf("control character %q in string (escape it)", c)
		default:
			r, size := utf8.DecodeRune(s.data[s.off:])
			if r == utf8.RuneError && size == 1 {
				return "", s.errorf("invalid UTF-8 in string")
			}
			b.Write(s.data[s.off : s.off+size])
			s.off += size
		}
	}
}

func (s *scanner) hex4() (rune, error) {
	if s.off+4 > len(s.data) {
		return 0, s.errorf("truncated \\u escape")
	}
	r, ok := parseHex4(s.data[s.off : s.off+4])
	if !ok {
		return 0, s.errorf("invalid \\u escape")
	}
	s.off += 4
	return r, nil
}

// surrogatePair completes r, just read from a \u escape, as encoding/json
// does: a high surrogate followed by a \u escape of a low one is a pair and
// both are taken; any other surrogate is U+FFFD, and whatever follows it is
// left for the next step, so that "\ud800\u0041" is U+FFFD and "A".
func (s *scanner) surrogatePair(r rune) rune {
	if !utf16.IsSurrogate(r) {
		return r
	}
	if s.off+6 <= len(s.data) && s.data[s.off] == '\\' && s.data[s.off+1] == 'u' {
		if r2, ok := parseHex4(s.data[s.off+2 : s.off+6]); ok {
			if pair := utf16.DecodeRune(r, r2); pair != utf8.RuneError {
				s.off += 6
				return pair
			}
		}
	}
	return utf8.RuneError
}

// parseHex4 reads exactly four hexadecimal digits.
func parseHex4(b []byte) (rune, bool) {
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (s *scanner) object(pos Pos, depth int) (*node, error) {
	n := &node{kind: kindObject, pos: pos}
	s.off++
	s.skipSpace()
	if s.off < len(s.data) && s.data[s.off] == '}' {
		s.off++
		return n, nil
	}
	for {
		s.skipSpace()
		if s.off >= len(s.data) || s.data[s.off] != '"' {
			return nil, s.errorf("unexpected %s, expected a field name in quotes", s.describe())
		}
		namePos := s.pos()
		name, err := s.string()
		if err != nil {
			return nil, err
		}
		s.skipSpace()
		if s.off >= len(s.data) || s.data[s.off] != ':' {
			return nil, s.errorf("unexpected %s, expected ':' after field %q", s.describe(), name)
		}
		s.off++
		s.skipSpace()
		v, err := s.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n.fields = append(n.fields, field{name: name, pos: namePos, val: v})
		s.skipSpace()
		if s.off >= len(s.data) {
			return nil, s.errorf("unexpected end of file, expected ',' or '}'")
		}
		switch s.data[s.off] {
		case ',':
			s.off++
		case '}':
			s.off++
			return n, nil
		default:
			return nil, s.errorf("unexpected %s, expected ',' or '}'", s.describe())
		}
	}
}

func (s *scanner) array(pos Pos, depth int) (*node, error) {
	n := &node{kind: kindArray, pos: pos}
	s.off++
	s.skipSpace()
	if s.off < len(s.data) && s.data[s.off] == ']' {
		s.off++
		return n, nil
	}
	for {
		s.skipSpace()
		v, err := s.value(depth + 1)
		if err != nil {
			return nil, err
		}
		n.elems = append(n.elems, v)
		s.skipSpace()
		if s.off >= len(s.data) {
			return nil, s.errorf("unexpected end of file, expected ',' or ']'")
		}
		switch s.data[s.off] {
		case ',':
			s.off++
		case ']':
			s.off++
			return n, nil
		default:
			return nil, s.errorf("unexpected %s, expected ',' or ']'", s.describe())
		}
	}
}
