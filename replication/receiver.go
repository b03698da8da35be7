package replication

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// receiver is the state of one session's receive loop. Only the goroutine
// that runs loop touches it.
type receiver[T Tx[T]] struct {
	s    *Stream[T]
	conn *pgconn.PgConn
	dec  *decoder

	asm         *assembler[T]
	serverEnd   pglogrepl.LSN
	received    pglogrepl.LSN
	lastSent    time.Time
	sentFlush   pglogrepl.LSN
	nextStatus  time.Time
	deadlineSet time.Time
	// conf secures positions before they are confirmed, with
	// Config.BeforeConfirm; nil without it.
	conf *confirmer

	// held are committed transactions not yet handed to the applier;
	// holdUntil is set when the loop first sees them held, and cleared when
	// they are handed over.
	held      []Committed[T]
	holdUntil time.Time

	// silence is how long the server may send nothing before the link is
	// presumed dead; lastRecv is when it last sent something, or when the
	// loop last resumed reading after waiting for the applier.
	silence  time.Duration
	lastRecv time.Time
	heard    bool // a message arrived since lastRecv was last set
}

func (r *receiver[T]) loop(ctx context.Context) error {
	s := r.s
	if err := r.sendStatus(false); err != nil {
		return err
	}
	for {
		if r.conf != nil {
			select {
			case err := <-r.conf.failed:
				return err
			default:
			}
		}
		now := time.Now()
		if r.heard {
			r.lastRecv, r.heard = now, false
		}
		if silent := now.Sub(r.lastRecv); silent > r.silence {
			return fmt.Errorf("%w: nothing received for %s", ErrSilent, silent.Round(time.Millisecond))
		}
		if !now.Before(r.nextStatus) {
			// Periodic update. When nothing is in flight, ask for a
			// keepalive: its position lets an idle slot move forward.
			// When the server has been quiet, ask too: its answer shows
			// the link is alive.
			ask := r.idle() || now.Sub(r.lastRecv) >= r.s.cfg.StatusInterval
			if err := r.sendStatus(ask); err != nil {
				return err
			}
		} else if r.confirmable() > r.sentFlush && (r.conf != nil || now.Sub(r.lastSent) >= s.cfg.FeedbackDelay) {
			// With a confirmer, what may be confirmed moves only when it
			// secured a position, once a FeedbackDelay at most: send it
			// at once.
			if err := r.sendStatus(false); err != nil {
				return err
			}
		}
		if len(r.held) > 0 {
			// Hand the held transactions over before waiting for the
			// server. With part of a message buffered, the rest is on its
			// way: read on, but no longer than holdLimit.
			if r.holdUntil.IsZero() {
				r.holdUntil = now.Add(holdLimit)
			}
			if r.conn.Frontend().ReadBufferLen() == 0 || !now.Before(r.holdUntil) {
				if err := r.flush(ctx); err != nil {
					return err
				}
			} else if r.deadlineSet.IsZero() || r.holdUntil.Before(r.deadlineSet) {
				r.armDeadline(r.holdUntil)
			}
		}
		if len(r.held) == 0 {
			r.setDeadline(now)
		}
		if ctx.Err() != nil {
			return ctx.Err() // cancelled after its wake-up was overwritten
		}

		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				r.deadlineSet = time.Time{}
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		r.heard = true
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := r.handleCopyData(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return errors.New("replication stream: server ended the copy")
		default:
			// NoticeResponse, ParameterStatus: nothing to do.
		}
	}
}

// holdLimit bounds how long held transactions wait for the rest of a
// partially received message before they are handed over anyway.
const holdLimit = time.Millisecond

// setDeadline arms the read deadline for the next status update, and for a
// check at least every FeedbackDelay: the applier does not interrupt the
// read when it acknowledges, so the loop looks for new acknowledgements
// that often while the stream is quiet.
func (r *receiver[T]) setDeadline(now time.Time) {
	d := r.lastSent.Add(r.s.cfg.FeedbackDelay)
	if !d.After(now) {
		d = r.deadlineSet
		if !d.After(now) {
			d = now.Add(r.s.cfg.FeedbackDelay)
		}
	}
	if r.nextStatus.Before(d) {
		d = r.nextStatus
	}
	r.armDeadline(d)
}

func (r *receiver[T]) armDeadline(d time.Time) {
	if !d.Equal(r.deadlineSet) {
		_ = r.conn.Conn().SetReadDeadline(d)
		r.deadlineSet = d
	}
}

// idle reports whether nothing received is unapplied: then a keepalive's
// position may be confirmed.
func (r *receiver[T]) idle() bool {
	return !r.asm.open() && len(r.held) == 0 && r.s.pending.Load() == 0
}

// confirmable returns the highest position that may be confirmed now: what
// the applier acknowledged, capped by the sinks (Config.Confirmable) and by
// what the confirmer secured.
func (r *receiver[T]) confirmable() pglogrepl.LSN {
	flush := r.s.confirmTarget()
	if r.conf != nil {
		flush = min(flush, r.conf.Secured())
	}
	return flush
}

func (r *receiver[T]) sendStatus(replyRequested bool) error {
	// Never below what was confirmed already: the server ignores it.
	flush := max(r.confirmable(), r.sentFlush)
	if flush == 0 {
		return errors.New("refusing to send a zero flush position")
	}
	write := max(r.received, flush)
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), r.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: write,
		WALFlushPosition: flush,
		WALApplyPosition: flush,
		ReplyRequested:   replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send status update: %w", err)
	}
	now := time.Now()
	r.lastSent = now
	r.sentFlush = flush
	r.nextStatus = now.Add(r.s.cfg.StatusInterval)
	r.s.m.confirmedLSN.Set(float64(flush))
	r.s.m.observeLag(r.serverEnd, flush)
	return nil
}

// endCopy ends the stream cleanly: CopyDone, then read (and drop) what the
// server still sends until it ends the copy too. Closing the socket with
// unread data would reset the connection, and the server could lose the
// final status update still in its receive buffer.
func (r *receiver[T]) endCopy() error {
	r.conn.Frontend().Send(&pgproto3.CopyDone{})
	if err := r.conn.Frontend().Flush(); err != nil {
		return err
	}
	_ = r.conn.Conn().SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete, *pgproto3.ReadyForQuery:
			return nil
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		}
	}
}

func (r *receiver[T]) handleCopyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("%w: empty CopyData", ErrMalformed)
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("%w: keepalive: %v", ErrMalformed, err)
		}
		r.serverEnd = max(r.serverEnd, ka.ServerWALEnd)
		if r.idle() {
			r.s.ack(ka.ServerWALEnd)
		}
		r.s.m.observeLag(r.serverEnd, r.s.Acked())
		if ka.ReplyRequested {
			return r.sendStatus(false)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("%w: XLogData: %v", ErrMalformed, err)
		}
		r.serverEnd = max(r.serverEnd, xld.ServerWALEnd)
		r.received = max(r.received, xld.WALStart)
		return r.handleMessage(ctx, xld.WALData)
	}
	return nil
}

func (r *receiver[T]) handleMessage(ctx context.Context, msg []byte) error {
	ev, err := r.dec.decode(msg)
	if err != nil {
		return err
	}
	switch {
	case ev.change != nil:
		r.s.m.countChange(ev.change)
	case ev.truncate != nil:
		for _, c := range ev.truncate {
			r.s.m.countChange(c)
		}
	case ev.relation != nil:
		r.s.m.attach(ev.relation)
	}
	c, done, err := r.asm.feed(&ev)
	if err != nil || !done {
		return err
	}
	return r.deliver(ctx, c)
}

// deliver holds a committed transaction back for the applier. Held
// transactions are handed over together when the receive loop is about to
// wait for the server (see loop), or once MaxBatch of them are held: while
// the stream arrives faster than single transactions can be applied, the
// applier gets them in batches, one Redis round trip each, without waiting
// for anything that has not arrived yet.
func (r *receiver[T]) deliver(ctx context.Context, c Committed[T]) error {
	r.held = append(r.held, c)
	if len(r.held) >= r.s.cfg.MaxBatch {
		return r.flush(ctx)
	}
	return nil
}

// flush hands the held transactions to the applier. While QueueSize
// transactions wait there it stops reading the stream, and keeps the
// connection alive with status updates.
func (r *receiver[T]) flush(ctx context.Context) error {
	if len(r.held) == 0 {
		return nil
	}
	r.s.pending.Add(int64(len(r.held)))
	queued := r.s.queue.put(r.held)
	clear(r.held)
	r.held = r.held[:0]
	r.holdUntil = time.Time{}
	if queued < r.s.cfg.QueueSize {
		return nil
	}
	t := time.NewTicker(r.s.cfg.FeedbackDelay)
	defer t.Stop()
	for r.s.queue.len() >= r.s.cfg.QueueSize {
		select {
		case <-r.s.queue.space:
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if err := r.sendStatus(false); err != nil {
				return err
			}
		}
	}
	// The loop did not read meanwhile: silence counts from now.
	r.lastRecv = time.Now()
	return nil
}
