package replication

import (
	"testing"
	"time"
)

func TestPacer(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	p := pacer{base: 2 * ms, burst: 3}
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
	q := pacer{base: 2 * ms, burst: 1}
	for i := range 100 {
		if d := q.wait(t0.Add(time.Duration(i) * 3 * ms)); d != 0 {
			t.Fatalf("event %d, 3ms after the last, waits %s", i, d)
		}
	}
	// A refunded event leaves the bucket as it was.
	r := pacer{base: 2 * ms, burst: 1}
	r.wait(t0)
	for range 5 {
		if d := r.wait(t0); d != 2*ms {
			t.Fatalf("past the burst: waits %s, want 2ms", d)
		}
		r.refund()
	}
	// No interval: no pacing.
	var none pacer
	for range 10 {
		if d := none.wait(t0); d != 0 {
			t.Fatalf("unpaced event waits %s", d)
		}
	}
}

func TestPacerStretchesWithTheArrivalRate(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	// steady feeds the pacer rate transactions a second for a second, one
	// take every 2ms, and returns the interval it settles on.
	steady := func(p *pacer, start time.Time, rate int) (time.Time, time.Duration) {
		now := start
		for range 500 {
			now = now.Add(2 * ms)
			p.arrived(rate/500, now)
		}
		return now, p.interval()
	}
	cases := []struct {
		rate int
		want time.Duration
	}{
		{500, 2 * ms},    // light: the base interval
		{1000, 2 * ms},   // lightRate
		{2000, 4 * ms},   // twice as busy: half the round trips
		{4000, 8 * ms},   // four times
		{20000, 10 * ms}, // no more than maxStretch
	}
	for _, c := range cases {
		p := pacer{base: 2 * ms, burst: 1}
		if _, got := steady(&p, t0, c.rate); got != c.want {
			t.Errorf("%d tx/s: interval %s, want %s", c.rate, got, c.want)
		}
	}

	// The stretched interval is what a busy stream waits for.
	p := pacer{base: 2 * ms, burst: 1}
	now, _ := steady(&p, t0, 5000)
	p.wait(now)
	if d := p.wait(now); d != 10*ms {
		t.Fatalf("busy stream waits %s, want 10ms", d)
	}
	// After a quiet spell the first window reports the low rate, and the
	// base interval is back.
	now = now.Add(time.Second)
	p.arrived(1, now)
	if got := p.interval(); got != 2*ms {
		t.Fatalf("after a quiet second: interval %s, want 2ms", got)
	}
}
