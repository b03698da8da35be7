package main

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

// The ACL line for the repository's rules.json, in each Redis mode.
func TestRulesACLGolden(t *testing.T) {
	rulesFile := filepath.Join("..", "..", "rules.json")
	for _, mode := range aclModes {
		t.Run(mode, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := rulesACL([]string{rulesFile, "--mode", mode}, &out, &errOut); code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			checkGolden(t, filepath.Join("testdata", "acl", mode+".golden"), out.Bytes())
		})
	}
}

func parseRules(t *testing.T, text string) *rules.File {
	t.Helper()
	f, err := rules.Parse("rules.json", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestACLSetUserPatterns(t *testing.T) {
	f := parseRules(t, `{
  "sections": {
    "a": { "keys": ["lit*eral?", "k:{id}"], "revision": "rev:[{id}]", "channel": "ev*ents" },
    "b": { "keys": ["k:{other}", "user profile:{id}", "{{x}}:{id}", "back\\slash"], "channel": "ev*ents" },
    "c": { "channel": "tab\tbed" }
  },
  "rules": [{ "name": "r", "tables": ["t"], "invalidate": ["a", "b", "c"] }]
}`)
	args, err := aclSetUser(f, "app-cdcd", "standalone")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"ACL", "SETUSER", "app-cdcd", "reset", "on", "resetchannels"}; !slices.Equal(args[:6], want) {
		t.Errorf("starts %q, want %q", args[:6], want)
	}
	var keys, channels []string
	for _, a := range args {
		switch a[0] {
		case '~':
			keys = append(keys, a)
		case '&':
			channels = append(channels, a)
		}
	}
	wantKeys := []string{`~lit\*eral\?`, `~k:*`, `~rev:\[*\]`, `~user?profile:*`, `~{x}:*`, `~back\\slash`, `~cdcd:*`}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("key patterns\n got %q\nwant %q", keys, wantKeys)
	}
	if want := []string{`&ev\*ents`, `&tab?bed`}; !slices.Equal(channels, want) {
		t.Errorf("channels %q, want %q", channels, want)
	}
}

func TestACLSetUserCommandsByMode(t *testing.T) {
	f := parseRules(t, `{"sections": {"a": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["a"]}]}`)
	has := func(mode, cmd string) bool {
		args, err := aclSetUser(f, "cdcd", mode)
		if err != nil {
			t.Fatal(err)
		}
		return slices.Contains(args, cmd)
	}
	for _, c := range []string{"+unlink", "+scan", "+eval", "+evalsha", "+publish", "+hset", "+ping", "+wait"} {
		if !has("standalone", c) {
			t.Errorf("standalone lacks %s", c)
		}
	}
	for _, c := range []string{"+config|get", "+config", "+keys", "+flushall", "+info", "+cluster|slots", "+client|setinfo"} {
		if has("standalone", c) {
			t.Errorf("standalone grants %s", c)
		}
	}
	for _, c := range []string{"+cluster|slots", "+command", "+asking", "+spublish", "+wait"} {
		if !has("cluster", c) {
			t.Errorf("cluster lacks %s", c)
		}
	}
	if !has("sentinel", "+wait") || has("sentinel", "+cluster|slots") {
		t.Error("sentinel: want WAIT, no CLUSTER")
	}
}

func TestACLSetUserRejects(t *testing.T) {
	f := parseRules(t, `{"sections": {"a": {"keys": ["k"]}}, "rules": [{"name": "r", "tables": ["t"], "invalidate": ["a"]}]}`)
	for _, c := range []struct{ user, mode, want string }{
		{"cdcd", "replicated", "unknown mode"},
		{"", "standalone", "cannot be empty"},
		{"my user", "standalone", "contain spaces"},
	} {
		if _, err := aclSetUser(f, c.user, c.mode); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("user %q mode %q: %v, want %q", c.user, c.mode, err, c.want)
		}
	}
}

// The line is read back by redis-cli, whose quoting starts at any quote
// character within a word.
func TestRedisCommandLine(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ACL", "SETUSER", "cdcd", `~a\*b`}, `ACL SETUSER cdcd ~a\*b`},
		{[]string{`~it's`}, `"~it's"`},
		{[]string{`~say"hi"\*`}, `"~say\"hi\"\\*"`},
		{[]string{"~bell\x07"}, `"~bell\x07"`},
		{[]string{"~é"}, `~é`},
		{[]string{""}, `""`},
	} {
		if got := redisCommandLine(c.args); got != c.want {
			t.Errorf("%q: got %s, want %s", c.args, got, c.want)
		}
	}
}

func TestRulesACLUsage(t *testing.T) {
	rulesFile := filepath.Join("..", "..", "rules.json")
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{rulesFile, "--user", "cache writer"}, exitUsage},
		{[]string{rulesFile, "--mode", "ring"}, exitUsage},
		{[]string{rulesFile, "extra"}, exitUsage},
		{[]string{filepath.Join("testdata", "missing.json")}, exitFailure},
	} {
		var out, errOut bytes.Buffer
		if code := rulesACL(c.args, &out, &errOut); code != c.code || out.Len() != 0 {
			t.Errorf("%q: exit %d, output %q; want exit %d and no output", c.args, code, out.String(), c.code)
		}
	}
	var out, errOut bytes.Buffer
	if code := rulesACL([]string{"--user", "svc", rulesFile}, &out, &errOut); code != exitOK || !strings.HasPrefix(out.String(), "ACL SETUSER svc reset on ") {
		t.Errorf("exit %d: %q %s", code, out.String(), errOut.String())
	}
}
