package replication

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	p := pacer{interval: 2 * ms, burst: 3}
	// A burst goes through at once.
	for i := range 3 {
		if d := p.wait(t0); d != 0 {
			t.Fatalf("event %d of the burst waits %s", i+1, d)
		}
	}
	// Then one per interval.
	if d := p.wait(t0); d != 2*ms {
		t.Fatalf("fourth event waits %s, want 2ms", d)
	}
	if d := p.wait(t0.Add(2 * ms)); d != 2*ms {
		t.Fatalf("fifth event, on time for its turn, waits %s, want 2ms", d)
	}
	// Idle time refills the burst, and no more than the burst.
	later := t0.Add(time.Second)
	for i := range 3 {
		if d := p.wait(later); d != 0 {
			t.Fatalf("after a pause, event %d waits %s", i+1, d)
		}
	}
	if d := p.wait(later); d != 2*ms {
		t.Fatalf("past the refilled burst: waits %s, want 2ms", d)
	}
	// Events that come slower than the rate never wait.
	q := pacer{interval: 2 * ms, burst: 1}
	for i := range 100 {
		if d := q.wait(t0.Add(time.Duration(i) * 3 * ms)); d != 0 {
			t.Fatalf("event %d, 3ms after the last, waits %s", i, d)
		}
	}
	// No interval: no pacing.
	var none pacer
	for range 10 {
		if d := none.wait(t0); d != 0 {
			t.Fatalf("unpaced event waits %s", d)
		}
	}
}
