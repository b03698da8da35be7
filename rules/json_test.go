package rules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseJSON feeds the same bytes to the rules-file reader and to
// encoding/json: both must accept or both refuse, and what both accept
// must decode to the same tree. The reader differs from encoding/json on
// purpose in four ways, each allowed below and nowhere else:
//
//   - A leading UTF-8 byte order mark is skipped (editors write one);
//     encoding/json refuses it. encoding/json is given the bytes after it.
//   - Nesting deeper than maxDepth is refused (the reader recurses);
//     encoding/json allows 10000 levels.
//   - Invalid UTF-8 inside a string is refused with its position;
//     encoding/json turns each bad byte into U+FFFD. A rules file that is
//     not UTF-8 would otherwise yield keys no application writes.
//   - An object keeps every field in file order, duplicates included, so
//     that Parse can report a duplicate where it stands; encoding/json
//     keeps the last. The comparison takes the reader's last field of each
//     name.
func FuzzParseJSON(f *testing.F) {
	// The committed corpus under testdata/fuzz/FuzzParseJSON holds the
	// tricky cases; the rules files of the other tests add real documents.
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil || filepath.Ext(path) != ".json" {
			return err
		}
		data, err := os.ReadFile(path)
		f.Add(data)
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if msg := diffEncodingJSON(data); msg != "" {
			t.Fatalf("%q: %s", data, msg)
		}
	})
}

// diffEncodingJSON returns how the reader and encoding/json disagree on
// data, or "" when they agree (allowing the differences FuzzParseJSON
// lists).
func diffEncodingJSON(data []byte) string {
	got, err := parseJSON(data)
	var want any
	wantErr := json.Unmarshal(bytes.TrimPrefix(data, []byte("\uFEFF")), &want)
	switch {
	case err != nil && wantErr != nil:
		return ""
	case err == nil && wantErr != nil:
		return fmt.Sprintf("the reader accepts, encoding/json refuses: %v", wantErr)
	case err != nil:
		var se *syntaxError
		if !errors.As(err, &se) {
			return fmt.Sprintf("error of type %T: %v", err, err)
		}
		switch {
		case strings.HasPrefix(se.msg, "nesting deeper") && depth(want) > maxDepth:
			return ""
		case se.msg == "invalid UTF-8 in string" && !utf8.Valid(data):
			return ""
		}
		return fmt.Sprintf("the reader refuses (%v), encoding/json accepts %#v", err, want)
	}
	return diffValue("$", got, want)
}

func depth(v any) int {
	d := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			d = max(d, depth(e)+1)
		}
	case map[string]any:
		for _, e := range v {
			d = max(d, depth(e)+1)
		}
	}
	return d
}

// diffValue compares the reader's tree with encoding/json's, naming the
// path of the first difference.
func diffValue(path string, n *node, v any) string {
	switch v := v.(type) {
	case nil:
		if n.kind == kindNull {
			return ""
		}
	case bool:
		if n.kind == kindBool && n.str == strconv.FormatBool(v) {
			return ""
		}
	case float64:
		if n.kind != kindNumber {
			break
		}
		f, err := strconv.ParseFloat(n.str, 64)
		if err == nil && math.Float64bits(f) == math.Float64bits(v) {
			return ""
		}
	case string:
		if n.kind == kindString && n.str == v {
			return ""
		}
	case []any:
		if n.kind != kindArray || len(n.elems) != len(v) {
			break
		}
		for i, e := range n.elems {
			if msg := diffValue(fmt.Sprintf("%s[%d]", path, i), e, v[i]); msg != "" {
				return msg
			}
		}
		return ""
	case map[string]any:
		if n.kind != kindObject {
			break
		}
		last := make(map[string]*node, len(n.fields))
		for _, f := range n.fields {
			last[f.name] = f.val
		}
		if len(last) != len(v) {
			break
		}
		for name, e := range v {
			fn, ok := last[name]
			if !ok {
				return fmt.Sprintf("%s: no field %q", path, name)
			}
			if msg := diffValue(fmt.Sprintf("%s[%q]", path, name), fn, e); msg != "" {
				return msg
			}
		}
		return ""
	}
	return fmt.Sprintf("%s: the reader has %s %q, encoding/json %#v", path, n.kind, n.str, v)
}

// TestParseJSONSurrogates: a \u escape of a surrogate is decoded as
// encoding/json decodes it, and a lone surrogate never takes the escape
// after it.
func TestParseJSONSurrogates(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`"\ud800\u0041"`, "\uFFFDA"},
		{`"\ud83d\ude00"`, "\U0001F600"},
		{`"\uD83D\uDE00"`, "\U0001F600"},
		{`"\ud83d"`, "\uFFFD"},
		{`"\ude00"`, "\uFFFD"},
		{`"\ude00\ud83d\ude00"`, "\uFFFD\U0001F600"},
		{`"\ud83d\ud83d\ude00"`, "\uFFFD\U0001F600"},
		{`"\ud83d\ud83d"`, "\uFFFD\uFFFD"},
		{`"\ud83dx"`, "\uFFFDx"},
		{`"\ud83d\n"`, "\uFFFD\n"},
		{`"\ud83d\\ude00"`, "\uFFFD\\ude00"},
		{`"\ud83d\u00e9"`, "\uFFFDé"},
		{`"\ud83d\ude"`, ""}, // refused: the second escape is truncated
		{`"\ud83d\ude0g"`, ""},
		{`"\u0000\uffff\ufffd"`, "\x00\uFFFF\uFFFD"},
	} {
		n, err := parseJSON([]byte(tc.src))
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("%s: accepted as %q, want an error", tc.src, n.str)
		case tc.want != "" && err != nil:
			t.Errorf("%s: %v", tc.src, err)
		case tc.want != "" && n.str != tc.want:
			t.Errorf("%s = %q, want %q", tc.src, n.str, tc.want)
		}
		if msg := diffEncodingJSON([]byte(tc.src)); msg != "" {
			t.Errorf("%s: %s", tc.src, msg)
		}
	}
}

// TestParseJSONNumbers: numbers follow RFC 8259's grammar, not
// strconv.ParseFloat's, and refuse what float64 cannot hold as
// encoding/json does.
func TestParseJSONNumbers(t *testing.T) {
	for _, tc := range []struct{ src, err string }{
		{"0", ""}, {"-0", ""}, {"7", ""}, {"-12", ""}, {"10", ""}, {"0.5", ""}, {"-0.5", ""},
		{"1.25", ""}, {"1e5", ""}, {"1E+5", ""}, {"1e-5", ""}, {"0e0", ""}, {"-0.0E-0", ""},
		{"123456789012345678901234567890", ""}, {"1e-400", ""}, {"1.7976931348623157e308", ""},
		{"01", `1:1: malformed number "01"`},
		{"-01", `1:1: malformed number "-01"`},
		{"00", `1:1: malformed number "00"`},
		{"1.", `1:1: malformed number "1."`},
		{"1.e5", `1:1: malformed number "1.e5"`},
		{"-.5", `1:1: malformed number "-.5"`},
		{".5", `1:1: unexpected '.', expected a value`},
		{"+1", `1:1: unexpected '+', expected a value`},
		{"1e", `1:1: malformed number "1e"`},
		{"1e+", `1:1: malformed number "1e+"`},
		{"1e5.5", `1:1: malformed number "1e5.5"`},
		{"0x10", `1:1: malformed number "0x10"`},
		{"1_000", `1:1: malformed number "1_000"`},
		{"Inf", `1:1: unexpected 'I', expected a value`},
		{"-Inf", `1:1: malformed number "-Inf"`},
		{"-Infinity", `1:1: malformed number "-Infinity"`},
		{"NaN", `1:1: unexpected 'N', expected a value`},
		{"-", `1:1: malformed number "-"`},
		{"--1", `1:1: malformed number "--1"`},
		{"1-2", `1:1: malformed number "1-2"`},
		{"1true", `1:1: malformed number "1true"`},
		{"1e400", `1:1: number 1e400 is out of range`},
		{"-1e400", `1:1: number -1e400 is out of range`},
		{"[1, 02]", `1:5: malformed number "02"`},
		{"[1,2]", ""}, {`{"a":-1}`, ""}, {"[0]", ""}, {"1 ", ""},
	} {
		_, err := parseJSON([]byte(tc.src))
		if got := fmt.Sprint(err); (err == nil) != (tc.err == "") || (err != nil && got != tc.err) {
			t.Errorf("%s: error %v, want %q", tc.src, err, tc.err)
		}
		if msg := diffEncodingJSON([]byte(tc.src)); msg != "" {
			t.Errorf("%s: %s", tc.src, msg)
		}
	}
}

// TestParseJSONIntendedDifferences: what diffEncodingJSON allows is
// allowed only where it applies.
func TestParseJSONIntendedDifferences(t *testing.T) {
	deep := func(levels int) string { return strings.Repeat("[", levels) + strings.Repeat("]", levels) }
	for _, tc := range []struct {
		src   string
		agree bool
	}{
		{"\uFEFF[1]", true},
		{"\uFEFF\uFEFF[1]", true},             // both refuse the second mark
		{deep(maxDepth + 1), true},            // the deepest the reader takes
		{deep(maxDepth + 2), true},            // refused by the reader only
		{"[" + deep(maxDepth+1) + "1]", true}, // refused by the reader only
		{"[\"\xff\"]", true},                  // invalid UTF-8: refused by the reader only
		{"[\xff]", true},                      // outside a string: both refuse
		{`{"a": 1, "a": 2}`, true},            // the reader keeps both, encoding/json the last
		{`{"a": 1, "b": 2, "a": 3}`, true},
	} {
		if msg := diffEncodingJSON([]byte(tc.src)); (msg == "") != tc.agree {
			t.Errorf("%q: %q", tc.src, msg)
		}
	}
	// The comparison itself must see a difference in every part of the
	// tree, and take the last of duplicate fields.
	n, err := parseJSON([]byte(`[1, "x", true, null, {"b": 2, "c": 0, "b": 3}, -0]`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		other string
		same  bool
	}{
		{`[1, "x", true, null, {"b": 3, "c": 0}, -0]`, true},
		{`[1, "x", true, null, {"b": 2, "c": 0}, -0]`, false},
		{`[1, "x", true, null, {"b": 3}, -0]`, false},
		{`[1, "x", true, null, {"b": 3, "d": 0}, -0]`, false},
		{`[1, "x", true, null, {"b": 3, "c": 0, "d": 0}, -0]`, false},
		{`[2, "x", true, null, {"b": 3, "c": 0}, -0]`, false},
		{`[1, "y", true, null, {"b": 3, "c": 0}, -0]`, false},
		{`[1, "x", false, null, {"b": 3, "c": 0}, -0]`, false},
		{`[1, "x", true, 0, {"b": 3, "c": 0}, -0]`, false},
		{`[1, "x", true, null, [], -0]`, false},
		{`[1, "x", true, null, {"b": 3, "c": 0}, 0]`, false},
		{`[1, "x", true, null, {"b": 3, "c": 0}]`, false},
		{`[1, "x", true, null, {"b": 3, "c": 0}, -0, 1]`, false},
		{`{"0": 1}`, false},
	} {
		var v any
		if err := json.Unmarshal([]byte(tc.other), &v); err != nil {
			t.Fatal(err)
		}
		if msg := diffValue("$", n, v); (msg == "") != tc.same {
			t.Errorf("against %s: %q", tc.other, msg)
		}
	}
}
