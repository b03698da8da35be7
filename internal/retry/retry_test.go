package retry

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestBackoffDoublesUpToMax(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, w := range want {
		if got := b.Next(); got != w*time.Millisecond {
			t.Fatalf("delay %d: %s, want %dms", i+1, got, w)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*time.Millisecond {
		t.Fatalf("after Reset: %s, want Min", got)
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 500 * time.Millisecond, Max: 30 * time.Second, Jitter: true}
	cur := 500 * time.Millisecond
	seen := map[time.Duration]bool{}
	for i := range 200 {
		d := b.Next()
		if d < cur/2 || d > cur {
			t.Fatalf("delay %d: %s, outside [%s, %s]", i+1, d, cur/2, cur)
		}
		seen[d] = true
		cur = min(cur*2, 30*time.Second)
	}
	if len(seen) < 2 {
		t.Fatal("jittered delays are all equal")
	}
	if d := Jitter(0); d != 0 {
		t.Fatalf("Jitter(0) = %s", d)
	}
}

func TestUntilRetriesUntilSuccess(t *testing.T) {
	t.Parallel()
	calls := 0
	var delays []time.Duration
	var attempts []int
	n, err := Until(context.Background(), Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond},
		func() error {
			calls++
			if calls < 4 {
				return errors.New("down")
			}
			return nil
		},
		func(err error, attempt int, delay time.Duration) {
			attempts = append(attempts, attempt)
			delays = append(delays, delay)
		})
	if err != nil || n != 4 {
		t.Fatalf("Until = %d, %v; want 4, nil", n, err)
	}
	ms := time.Millisecond
	if len(delays) != 3 || delays[0] != ms || delays[1] != 2*ms || delays[2] != 2*ms {
		t.Fatalf("delays %v, want [1ms 2ms 2ms]", delays)
	}
	if attempts[0] != 1 || attempts[2] != 3 {
		t.Fatalf("attempts reported %v, want [1 2 3]", attempts)
	}
}

func TestUntilStartsFromMin(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: time.Millisecond, Max: time.Hour}
	for range 20 {
		b.Next() // a used Backoff: its state must not carry into Until
	}
	var first time.Duration
	calls := 0
	_, err := Until(context.Background(), b, func() error {
		calls++
		if calls == 1 {
			return errors.New("once")
		}
		return nil
	}, func(_ error, _ int, d time.Duration) { first = d })
	if err != nil || first != time.Millisecond {
		t.Fatalf("first delay %s (%v), want Min", first, err)
	}
}

func TestUntilStopsWithTheContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	failures := 0
	done := make(chan error, 1)
	go func() {
		_, err := Until(ctx, Backoff{Min: time.Hour, Max: time.Hour}, func() error { return errors.New("down") },
			func(error, int, time.Duration) { failures++ })
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Until = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Until kept waiting after its context ended")
	}
	if failures != 1 {
		t.Fatalf("%d failures reported, want 1", failures)
	}

	// A failure caused by the context ending is not reported.
	reported := false
	_, err := Until(ctx, Backoff{Min: time.Millisecond}, func() error { return ctx.Err() },
		func(error, int, time.Duration) { reported = true })
	if !errors.Is(err, context.Canceled) || reported {
		t.Fatalf("Until on a done context = %v, reported %t", err, reported)
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	if err := Wait(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := Wait(ctx, time.Hour); !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("Wait on a done context: %v after %s", err, time.Since(start))
	}
}
