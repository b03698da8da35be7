package replication

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
)

// The confirmer publishes what its check accepted and nothing more, checks
// the last accepted position again while none is new, and hands on the
// errors that end a session.
func TestConfirmer(t *testing.T) {
	var mu sync.Mutex
	var checked []pglogrepl.LSN
	var refuse atomic.Bool
	var fail atomic.Pointer[error]
	var target atomic.Uint64
	var wakes atomic.Int32
	check := func(ctx context.Context, lsn pglogrepl.LSN) error {
		mu.Lock()
		checked = append(checked, lsn)
		mu.Unlock()
		if p := fail.Load(); p != nil {
			return *p
		}
		if refuse.Load() {
			return errors.New("replicas did not acknowledge")
		}
		return nil
	}
	c := newConfirmer(check, func() pglogrepl.LSN { return pglogrepl.LSN(target.Load()) }, 100,
		time.Second, 5*time.Millisecond, slog.New(slog.DiscardHandler), func() { wakes.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	go c.run(ctx)
	defer c.stop(cancel)

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	last := func() pglogrepl.LSN {
		mu.Lock()
		defer mu.Unlock()
		if len(checked) == 0 {
			return 0
		}
		return checked[len(checked)-1]
	}

	// Nothing new: the position it started from is checked again.
	waitUntil("a re-check of the starting position", func() bool { return last() == 100 })

	target.Store(200)
	waitUntil("200 secured", func() bool { return c.Secured() == 200 })
	if wakes.Load() == 0 {
		t.Error("the receive loop was not woken for a new secured position")
	}

	refuse.Store(true)
	target.Store(300)
	waitUntil("300 checked", func() bool { return last() == 300 })
	time.Sleep(20 * time.Millisecond)
	if got := c.Secured(); got != 200 {
		t.Errorf("secured %s after its check was refused", got)
	}
	refuse.Store(false)
	waitUntil("300 secured", func() bool { return c.Secured() == 300 })

	resync := error(ErrResync)
	fail.Store(&resync)
	select {
	case err := <-c.failed:
		if !errors.Is(err, ErrResync) {
			t.Errorf("failed with %v, want ErrResync", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ErrResync did not reach the receive loop")
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the confirmer went on after an error that ends the session")
	}
}
