package replication

import "time"

// applyBurst is how many batches in a row the applier takes without pacing.
const applyBurst = 10

// pacer spaces events at most one per interval once bursts of burst have
// been spent (the generic cell rate algorithm, a token bucket). The interval
// is base while the stream brings up to lightRate transactions a second and
// grows in proportion beyond that, up to maxStretch × base. Round trips are
// what a consumer costs the database host: while the stream is light they
// are cheap and latency is what matters; a heavy stream means a busy
// database, whose CPU every round trip takes from, and there each round
// trip carries more transactions instead.
//
// Not golang.org/x/time/rate: the arrival-rate measure and the stretch
// would stay here, the limit would be reset with SetLimitAt on every
// window and a refund become a kept Reservation's CancelAt: the library
// would replace only the few lines of cell rate below.
type pacer struct {
	base  time.Duration // 0: no pacing
	burst int
	tat   time.Time // theoretical arrival time of the next event

	// The arrival rate, measured over windows of at least rateWindow.
	since time.Time
	count int
	rate  float64 // transactions per second in the last window
}

const (
	lightRate  = 1000 // transactions per second paced at base
	maxStretch = 5
	rateWindow = 100 * time.Millisecond
)

// interval is the current spacing of events.
func (p *pacer) interval() time.Duration {
	f := min(max(p.rate/lightRate, 1), maxStretch)
	return time.Duration(float64(p.base) * f)
}

// wait returns how long an event at now must wait for its turn, and counts
// it as taken.
func (p *pacer) wait(now time.Time) time.Duration {
	if p.base <= 0 {
		return 0
	}
	iv := p.interval()
	if p.tat.Before(now) {
		p.tat = now
	}
	p.tat = p.tat.Add(iv)
	if allow := p.tat.Add(-time.Duration(p.burst) * iv); allow.After(now) {
		return allow.Sub(now)
	}
	return 0
}

// refund uncounts the last event, which did not wait for its turn after
// all. The interval is the one wait used: only arrived changes it.
func (p *pacer) refund() {
	p.tat = p.tat.Add(-p.interval())
}

// arrived records n transactions taken at now. A window that ends after a
// quiet spell counts the spell, so the rate falls at once.
func (p *pacer) arrived(n int, now time.Time) {
	if p.since.IsZero() {
		p.since = now
	}
	p.count += n
	if el := now.Sub(p.since); el >= rateWindow {
		p.rate = float64(p.count) / el.Seconds()
		p.since, p.count = now, 0
	}
}
