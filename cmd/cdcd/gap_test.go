package main

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/sinks"
	"github.com/jackc/pglogrepl"
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

// recordingState is a StateStore that keeps the recorded position.
type recordingState struct {
	sinks.StateStore
	confirmed pglogrepl.LSN
}

func (s *recordingState) Advance(_ context.Context, _ sinks.State, lsn pglogrepl.LSN) error {
	s.confirmed = max(s.confirmed, lsn)
	return nil
}

// securingSink is a Sink that notes how far the recorded state was when it
// was asked to secure a position.
type securingSink struct {
	sinks.Sink
	state    *recordingState
	recorded []pglogrepl.LSN
}

func (s *securingSink) Secure(_ context.Context, _ pglogrepl.LSN) error {
	s.recorded = append(s.recorded, s.state.confirmed)
	return nil
}

// The recorded position is written before the sinks secure it: their WAIT
// for replicas then covers it, and a failover to a replica that holds every
// delete holds the record too. Recorded after, such a failover read as a
// slot advanced by something else: a full invalidation where nothing was
// lost.
func TestBeforeConfirmRecordsBeforeSecuring(t *testing.T) {
	state := &recordingState{}
	sink := &securingSink{state: state}
	log := slog.New(slog.DiscardHandler)
	m := sinks.NewMetrics(nil)
	d := &daemon{log: log, state: state, applier: sinks.NewApplier(sinks.NewAlerts(log, m, nil), m, sink)}
	d.server.Store(&sinks.State{SystemID: "7", Timeline: 1})
	for _, lsn := range []pglogrepl.LSN{0x1000, 0x2000} {
		if err := d.beforeConfirm(context.Background(), lsn); err != nil {
			t.Fatal(err)
		}
	}
	if want := []pglogrepl.LSN{0x1000, 0x2000}; !slices.Equal(sink.recorded, want) {
		t.Errorf("recorded position when the sinks secured each: %v, want %v", sink.recorded, want)
	}
}
