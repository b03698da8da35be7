package rules

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/jackc/pglogrepl"
)

func FuzzJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `"quoted" \ back`, "\x00\x01\b\f\n\r\t\x1f\x7f", "<a href='x'>&amp;</a>",
		"caf\u00e9 \u2028 \u2029 \U0001F600", "\xff\xfe bad \xc3", "nodb:{run_id}:climate", "a*b?[c]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}

// The channel message is what encoding/json made of these fields before it
// was written by hand.
type channelMessage struct {
	Section    string   `json:"section"`
	Keys       []string `json:"keys"`
	Patterns   []string `json:"patterns,omitempty"`
	LSN        string   `json:"lsn"`
	CommitTime string   `json:"commit_time"`
}

func TestChannelMessageMatchesEncodingJSON(t *testing.T) {
	at := time.Date(2024, 2, 29, 23, 59, 59, 120000000, time.FixedZone("X", -7*3600))
	for _, tc := range []struct {
		name string
		plan Plan
		lsn  pglogrepl.LSN
	}{
		{"no keys", Plan{}, 0},
		{"keys of two sections", Plan{Keys: []Key{{Key: "a:1", Section: "s"}, {Key: "b", Section: "t"}, {Key: "a:<2>&\"", Section: "s"}}}, 0x16B3748},
		{"patterns", Plan{Keys: []Key{{Key: "lit", Section: "s"}}, Patterns: []Pattern{{Pattern: "a:*", Section: "s"}, {Pattern: "z:*", Section: "t"}}}, 0xFFFFFFFF00000001},
		{"odd bytes", Plan{Keys: []Key{{Key: "\xff\n\u2028", Section: "s"}}}, 1 << 32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := replication.Commit{CommitLSN: tc.lsn, CommitTime: at}
			m := channelMessage{Section: "s", Keys: []string{}, LSN: tc.lsn.String(), CommitTime: at.UTC().Format(time.RFC3339Nano)}
			for _, k := range tc.plan.Keys {
				if k.Section == "s" {
					m.Keys = append(m.Keys, k.Key)
				}
			}
			for _, p := range tc.plan.Patterns {
				if p.Section == "s" {
					m.Patterns = append(m.Patterns, p.Pattern)
				}
			}
			want, _ := json.Marshal(m)
			if got := appendChannelMessage(nil, "s", &tc.plan, c); string(got) != string(want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

func TestAppendLSN(t *testing.T) {
	for _, l := range []pglogrepl.LSN{0, 1, 0x16B3748, 0xABCDEF0123456789, 1<<64 - 1} {
		if got := string(appendLSN(nil, l)); got != l.String() {
			t.Errorf("appendLSN(%d) = %s, want %s", uint64(l), got, l.String())
		}
	}
}
