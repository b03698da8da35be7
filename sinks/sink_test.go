package sinks

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
)

// memorySink is a cache in a map: a sink that is not Redis, applying plans
// with what rules.Plan says and no Redis glob.
type memorySink struct {
	keys    map[string]string
	applied []pglogrepl.LSN
	hold    pglogrepl.LSN // Confirmable stops below it; 0: nothing held
	lost    string
	secured pglogrepl.LSN
}

func (m *memorySink) Apply(_ context.Context, plans []*rules.Plan) error {
	for _, p := range plans {
		for _, r := range p.Revisions {
			for k := range m.keys {
				if r.IsPattern && r.Matches(k) {
					m.keys[k] = p.CommitLSN.String()
				}
			}
			if !r.IsPattern {
				m.keys[r.Key] = p.CommitLSN.String()
			}
		}
		for _, k := range p.Keys {
			delete(m.keys, k.Key)
		}
		for _, pt := range p.Patterns {
			maps.DeleteFunc(m.keys, func(k, _ string) bool { return pt.Matches(k) })
		}
		m.applied = append(m.applied, p.CommitLSN)
	}
	return nil
}

func (m *memorySink) Confirmable(lsn pglogrepl.LSN) pglogrepl.LSN {
	if m.hold != 0 && lsn >= m.hold {
		return m.hold - 1
	}
	return lsn
}

func (m *memorySink) Secure(_ context.Context, lsn pglogrepl.LSN) error {
	if m.lost != "" {
		return ErrLostWrites
	}
	m.secured = lsn
	return nil
}

func (m *memorySink) Lost(context.Context, pglogrepl.LSN) (string, error) { return m.lost, nil }

func testApplier(t *testing.T, sinks ...Sink) *Applier {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	m := NewMetrics(prometheus.NewRegistry())
	return NewApplier(NewAlerts(log, m, nil), m, sinks...)
}

// A gap's plan, through the applier, empties a sink that is not Redis of
// every key the rules name and moves its revisions: the plan says which
// keys its patterns cover without a glob.
func TestApplierDrivesASinkThatIsNotRedis(t *testing.T) {
	rs, err := rules.Load("../rules.json")
	if err != nil {
		t.Fatal(err)
	}
	mem := &memorySink{keys: map[string]string{
		"state:summary:core":     "v",
		"nodb:42:climate":        "v",
		"nodb:42:climate:rev":    "0/1",
		"impact:7:v3":            "v",
		"impact:7:rev":           "0/1",
		"nodb:42:progress":       "kept: no section names it",
		"state:summary:rev:core": "0/1",
	}}
	a := testApplier(t, mem)
	c := replication.Commit{CommitLSN: 0x2000, EndLSN: 0x2001, CommitTime: time.Now()}
	if err := a.Apply(context.Background(), []*rules.Plan{rs.Everything("wal_lost", c)}); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"nodb:42:progress":           "kept: no section names it",
		"nodb:42:climate:rev":        "0/2000",
		"impact:7:rev":               "0/2000",
		"state:summary:rev:core":     "0/2000",
		"state:summary:rev:progress": "0/2000",
	}
	if !maps.Equal(mem.keys, want) {
		t.Errorf("after the gap:\n got %v\nwant %v", mem.keys, want)
	}
}

// The applier confirms what every sink applied, secures every sink before
// a confirmation, and says which lost writes.
func TestApplierOverSinks(t *testing.T) {
	a, b := &memorySink{keys: map[string]string{}}, &memorySink{keys: map[string]string{}, hold: 0x50}
	ap := testApplier(t, a, b)
	plans := []*rules.Plan{{CommitLSN: 0x10, Keys: []rules.Key{{Key: "k"}}}, {CommitLSN: 0x60, Keys: []rules.Key{{Key: "k"}}}}
	if err := ap.Apply(context.Background(), plans); err != nil {
		t.Fatal(err)
	}
	if want := []pglogrepl.LSN{0x10, 0x60}; !slices.Equal(a.applied, want) || !slices.Equal(b.applied, want) {
		t.Errorf("applied %v and %v, want both %v in order", a.applied, b.applied, want)
	}
	if got := ap.Confirmable(0x60); got != 0x4F {
		t.Errorf("confirmable %s, want 0/4F: the second sink holds 0/50", got)
	}
	if err := ap.Secure(context.Background(), 0x4F); err != nil || a.secured != 0x4F || b.secured != 0x4F {
		t.Errorf("secure: %v; secured %s %s", err, a.secured, b.secured)
	}
	b.lost = "b lost writes"
	if err := ap.Secure(context.Background(), 0x60); !errors.Is(err, ErrLostWrites) {
		t.Errorf("secure with a sink that lost writes: %v", err)
	}
	if why, err := ap.Lost(context.Background(), 0x60); err != nil || why != "b lost writes" {
		t.Errorf("lost: %q %v", why, err)
	}
}
