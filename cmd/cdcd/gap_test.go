package main

import (
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/sinks"
)

func TestGapOf(t *testing.T) {
	rec := sinks.Recorded{Known: true, Marked: true, State: sinks.State{SystemID: "7", Timeline: 1, Confirmed: 0x1000}}
	start := replication.Start{SystemID: "7", Timeline: 1, Confirmed: 0x1000}
	tests := []struct {
		name   string
		rec    func(r *sinks.Recorded)
		start  func(s *replication.Start)
		reason string
	}{
		{name: "same server, same position"},
		{name: "server resumes earlier (lost status update)", start: func(s *replication.Start) { s.Confirmed = 0x800 }},
		{name: "first start", rec: func(r *sinks.Recorded) { *r = sinks.Recorded{} }},
		{name: "first start on a slot a DBA created", rec: func(r *sinks.Recorded) { *r = sinks.Recorded{} }},
		{name: "redis emptied", rec: func(r *sinks.Recorded) { *r = sinks.Recorded{} }, start: func(s *replication.Start) { s.Confirmed = 0x9000 }},
		{name: "state deleted, redis not emptied", rec: func(r *sinks.Recorded) { r.Known = false }, reason: "state_missing"},
		{name: "state deleted and the slot too", rec: func(r *sinks.Recorded) { r.Known = false },
			start: func(s *replication.Start) { s.SlotCreated = true }, reason: "state_missing"},
		{name: "wal lost", start: func(s *replication.Start) { s.WALLost = true }, reason: "wal_lost"},
		{name: "another server", start: func(s *replication.Start) { s.SystemID = "8"; s.SlotCreated = true }, reason: "system_identifier_changed"},
		{name: "promotion", start: func(s *replication.Start) { s.Timeline = 2 }, reason: "timeline_changed"},
		{name: "state from before timelines were recorded", rec: func(r *sinks.Recorded) { r.Timeline = 0 }, start: func(s *replication.Start) { s.Timeline = 3 }},
		{name: "slot recreated", start: func(s *replication.Start) { s.SlotCreated = true }, reason: "slot_recreated"},
		{name: "slot advanced", start: func(s *replication.Start) { s.Confirmed = 0x2000 }, reason: "slot_advanced"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, s := rec, start
			if tc.rec != nil {
				tc.rec(&r)
			}
			if tc.start != nil {
				tc.start(&s)
			}
			reason, why := gapOf(r, s)
			if reason != tc.reason {
				t.Fatalf("reason %q (%s), want %q", reason, why, tc.reason)
			}
			if (reason == "") != (why == "") {
				t.Fatalf("reason %q with explanation %q", reason, why)
			}
			found := reason == ""
			for _, g := range gapReasons {
				found = found || g == reason
			}
			if !found {
				t.Fatalf("reason %q is not a label of cdcd_gap_invalidations_total", reason)
			}
		})
	}
}
