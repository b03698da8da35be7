package replication

import (
	"context"
	"sync"
	"time"
)

// drainApplier stops the applier after the batch in hand and waits for it.
func (s *Stream[T]) drainApplier() {
	s.stopOnce.Do(func() { close(s.stopApply) })
	<-s.applyDone
}

func (s *Stream[T]) applyLoop(ctx context.Context) {
	defer close(s.applyDone)
	var taken []Committed[T]
	pace := pacer{burst: applyBurst}
	if s.cfg.ApplyRate > 0 {
		pace.base = time.Second / time.Duration(s.cfg.ApplyRate)
	}
	for {
		select {
		case <-s.stopApply:
			return
		default:
		}
		select {
		case <-s.stopApply:
			return
		case <-s.queue.ready:
		}
		queued := s.queue.len()
		if queued == 0 {
			continue // signalled for what the last take got
		}
		// Wait for this batch's turn, but not past a full batch: a backlog
		// is applied as fast as the sinks take it.
		if queued < s.cfg.MaxBatch {
			start := time.Now()
			if d := pace.wait(start); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-s.stopApply:
					t.Stop()
					return
				case <-t.C:
				case <-s.queue.full:
					t.Stop()
					pace.refund() // a full batch goes out of turn
				}
				s.m.paced.Add(time.Since(start).Seconds())
			}
		}
		taken = s.queue.take(taken[:0])
		pace.arrived(len(taken), time.Now())
		for i := 0; i < len(taken); {
			n := min(len(taken)-i, s.cfg.MaxBatch)
			batch := taken[i : i+n]
			if ackBeforeApply {
				s.ack(batch[n-1].EndLSN) // the fault suite's broken build
			}
			if err := s.cfg.Apply(ctx, batch); err != nil {
				s.log.Warn("batch not applied; it stays unacknowledged", "err", err, "transactions", n)
				return
			}
			// No wake-up for the receive loop: it reports the new position
			// within FeedbackDelay on its own, and a round trip per batch
			// for it would cost more than the batch.
			s.ack(batch[n-1].EndLSN)
			s.pending.Add(-int64(n))
			clear(batch)
			i += n
			select {
			case <-s.stopApply:
				return
			default:
			}
		}
	}
}

// handoff carries committed transactions from the receive loop to the
// applier. The two sides swap buffers, so a steady stream allocates nothing.
type handoff[T any] struct {
	mu    sync.Mutex
	txs   []Committed[T]
	batch int           // a full batch
	ready chan struct{} // signalled when txs becomes non-empty
	full  chan struct{} // signalled when txs reaches a full batch
	space chan struct{} // signalled when the applier takes txs
}

func newHandoff[T any](batch int) handoff[T] {
	return handoff[T]{batch: batch, ready: make(chan struct{}, 1), full: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// put appends txs and returns how many wait now.
func (h *handoff[T]) put(txs []Committed[T]) int {
	h.mu.Lock()
	h.txs = append(h.txs, txs...)
	n := len(h.txs)
	h.mu.Unlock()
	signal(h.ready)
	if n >= h.batch && n-len(txs) < h.batch {
		signal(h.full)
	}
	return n
}

// take returns everything waiting, appended to spare, which becomes the
// buffer put appends to next.
func (h *handoff[T]) take(spare []Committed[T]) []Committed[T] {
	h.mu.Lock()
	out := h.txs
	h.txs = spare[:0]
	h.mu.Unlock()
	// A full batch signalled before this take is in it.
	select {
	case <-h.full:
	default:
	}
	signal(h.space)
	return out
}

// signal wakes c's receiver, unless a wake-up is already pending.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (h *handoff[T]) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.txs)
}
