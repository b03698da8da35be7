package rules_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

// A gap invalidates every section and moves every revision, and each
// section with a channel hears of it in a message marked as a gap.
func TestEverything(t *testing.T) {
	rs := compile(t, evalRules)
	p := rs.Everything("slot_recreated", commit)
	if p.CommitLSN != commit.CommitLSN || !p.CommitTime.Equal(commit.CommitTime) {
		t.Errorf("plan at %s %s, want %s %s", p.CommitLSN, p.CommitTime, commit.CommitLSN, commit.CommitTime)
	}
	if got, want := keyList(p), []string{"summary:core core/gap/literal", "ev:all ev/gap/literal", "renamed:all renamed/gap/literal"}; !slices.Equal(got, want) {
		t.Errorf("keys\n got %q\nwant %q", got, want)
	}
	for _, want := range []string{"task:* task/gap/gap", "nodb:*:climate run/gap/gap", "quiet:* quiet/gap/gap"} {
		if !slices.Contains(patternList(p), want) {
			t.Errorf("no pattern %s: %q", want, patternList(p))
		}
	}
	if got, want := revisionList(p), []string{"rev:core core", "rev:run:* run (pattern)", "rev:renamed:* renamed (pattern)", "impact:*:rev impact (pattern)"}; !slices.Equal(got, want) {
		t.Errorf("revisions\n got %q\nwant %q", got, want)
	}

	// The ordinary message's fields, then the gap's.
	want := map[string]string{
		"cdcd:invalidations": `{"section":"run","keys":[],"patterns":["nodb:*:climate"],` +
			`"lsn":"0/16B3748","commit_time":"2023-11-14T22:13:20.123456789Z","gap":true,"reason":"slot_recreated"}`,
		"cdcd:events": `{"section":"ev","keys":["ev:all"],"patterns":["ev:*"],` +
			`"lsn":"0/16B3748","commit_time":"2023-11-14T22:13:20.123456789Z","gap":true,"reason":"slot_recreated"}`,
	}
	if len(p.Messages) != len(want) {
		t.Fatalf("%d messages, want %d: %+v", len(p.Messages), len(want), p.Messages)
	}
	for _, m := range p.Messages {
		if string(m.Payload) != want[m.Channel] || !json.Valid(m.Payload) || !strings.Contains(want[m.Channel], `"section":"`+m.Section+`"`) {
			t.Errorf("channel %s, section %s: %s\nwant %s", m.Channel, m.Section, m.Payload, want[m.Channel])
		}
	}
}

// A reason is a JSON string like any other.
func TestEverythingReasonEscaped(t *testing.T) {
	rs := compile(t, evalRules)
	for _, m := range rs.Everything("a \"quoted\"\nreason", commit).Messages {
		var got struct{ Reason string }
		if err := json.Unmarshal(m.Payload, &got); err != nil || got.Reason != "a \"quoted\"\nreason" {
			t.Errorf("%s: %v", m.Payload, err)
		}
	}
}

// A plan's patterns say which keys they cover without a Redis glob, so
// that a sink other than Redis can apply them: each matches exactly the
// keys its template renders, and no key of another section.
func TestPatternsMatchWithoutGlobs(t *testing.T) {
	rs := compile(t, evalRules)
	p := rs.Everything("slot_recreated", commit)
	cases := []struct {
		pattern, in, out string
	}{
		{"nodb:*:climate", "nodb:42:climate", "nodb:42:progress"},
		{"task:*", "task:7", "tasks"},
		{"ev:*", "ev:x", "event:x"},
	}
	for _, c := range cases {
		i := slices.IndexFunc(p.Patterns, func(pt rules.Pattern) bool { return pt.Pattern == c.pattern })
		if i < 0 {
			t.Fatalf("no pattern %s in %q", c.pattern, patternList(p))
		}
		pt := p.Patterns[i]
		if pt.Template == nil || !pt.Matches(c.in) || pt.Matches(c.out) {
			t.Errorf("pattern %s (template %v): matches %q %v, %q %v", c.pattern, pt.Template, c.in, pt.Matches(c.in), c.out, pt.Matches(c.out))
		}
	}
	for _, r := range p.Revisions {
		if r.IsPattern && (r.Template == nil || !r.Matches(strings.ReplaceAll(r.Key, "*", "9"))) {
			t.Errorf("revision pattern %s: template %v does not match its own key", r.Key, r.Template)
		}
		if !r.IsPattern && !r.Matches(r.Key) {
			t.Errorf("revision %s does not match itself", r.Key)
		}
	}
}
