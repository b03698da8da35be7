package rules_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
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

	type message struct {
		Section    string   `json:"section"`
		Keys       []string `json:"keys"`
		Patterns   []string `json:"patterns"`
		LSN        string   `json:"lsn"`
		CommitTime string   `json:"commit_time"`
		Gap        bool     `json:"gap"`
		Reason     string   `json:"reason"`
	}
	want := map[string]message{
		"cdcd:invalidations": {Section: "run", Keys: []string{}, Patterns: []string{"nodb:*:climate"}},
		"cdcd:events":        {Section: "ev", Keys: []string{"ev:all"}, Patterns: []string{"ev:*"}},
	}
	if len(p.Messages) != len(want) {
		t.Fatalf("%d messages, want %d: %+v", len(p.Messages), len(want), p.Messages)
	}
	for _, m := range p.Messages {
		var got message
		if err := json.Unmarshal(m.Payload, &got); err != nil {
			t.Fatalf("%s: %v", m.Payload, err)
		}
		w := want[m.Channel]
		w.LSN, w.CommitTime, w.Gap, w.Reason = "0/16B3748", "2023-11-14T22:13:20.123456789Z", true, "slot_recreated"
		if m.Section != w.Section || !equalJSON(got, w) {
			t.Errorf("channel %s: %s, want %+v", m.Channel, m.Payload, w)
		}
		// The gap fields come last: an ordinary message is a prefix.
		if !strings.HasSuffix(string(m.Payload), `,"gap":true,"reason":"slot_recreated"}`) {
			t.Errorf("payload %s", m.Payload)
		}
	}
}

func equalJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
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
