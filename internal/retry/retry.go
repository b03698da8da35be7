package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is capped exponential backoff: the first delay is Min, each next
// one twice the last, up to Max. The zero value of its state starts at Min.
type Backoff struct {
	Min, Max time.Duration
	// Jitter draws each delay at random from the upper half of its value,
	// so that instances that lost the same server do not retry in step.
	Jitter bool

	cur time.Duration
}

// Next returns the delay before the next attempt and grows the one after.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(b.cur*2, b.Max)
	}
	if b.Jitter {
		return Jitter(b.cur)
	}
	return b.cur
}

// Reset makes the next delay Min again.
func (b *Backoff) Reset() { b.cur = 0 }

// Jitter returns a random duration between d/2 and d.
func Jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// Wait waits for d, or until ctx is done, and then returns ctx's error.
func Wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Until calls op until it returns nil, waiting b's delays between attempts
// (from Min: b's state is not carried in), and returns how many attempts it
// took. It gives up only when ctx is done, with ctx's error. failed, when
// not nil, is told of each failure while ctx is live, with the attempt's
// number and the delay before the next one; a failure caused by ctx ending
// is not reported.
func Until(ctx context.Context, b Backoff, op func() error, failed func(err error, attempt int, delay time.Duration)) (int, error) {
	b.Reset()
	for attempt := 1; ; attempt++ {
		err := op()
		if err == nil {
			return attempt, nil
		}
		if ctx.Err() != nil {
			return attempt, ctx.Err()
		}
		delay := b.Next()
		if failed != nil {
			failed(err, attempt, delay)
		}
		if err := Wait(ctx, delay); err != nil {
			return attempt, err
		}
	}
}
