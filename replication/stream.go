package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is what a Stream needs. DatabaseURL, Slot, Publication, Begin and
// Apply are required.
type Config struct {
	// DatabaseURL is a libpq URL or DSN; replication=database is added.
	DatabaseURL string
	Slot        string
	Publication string

	// Tables returns the schema-qualified tables the publication must hold.
	// It is called at the start of every session.
	Tables func() []string

	// Begin is called for every transaction the stream opens; the Tx it
	// returns receives the transaction's changes and travels with it to Apply.
	Begin func(Begin) Tx

	// Apply applies a batch of consecutive committed transactions, in commit
	// order. It runs in its own goroutine and may block as long as it needs:
	// the stream keeps the connection alive meanwhile. It must return nil only
	// once every transaction of the batch is applied; an error (only when ctx
	// is done) leaves the batch unacknowledged.
	Apply func(ctx context.Context, batch []Committed) error

	// OnStart, when set, is called once a session has checked its slot and
	// before it streams. An error ends the session (it is retried).
	OnStart func(ctx context.Context, st Start) error
	// BeforeConfirm, when set, is called with a position before it is first
	// confirmed to the server; the position is confirmed only if it returns
	// nil. It lets the caller record what it confirmed where it can later
	// tell a gap from its own progress.
	BeforeConfirm func(ctx context.Context, lsn pglogrepl.LSN) error

	// StatusInterval bounds the time between two standby status updates.
	// Default 10s.
	StatusInterval time.Duration
	// FeedbackDelay is how soon an applied transaction is confirmed to the
	// server when nothing else prompts a status update. Default 1s.
	FeedbackDelay time.Duration
	// QueueSize is how many committed transactions may wait for Apply
	// before the stream stops reading. Default 1024.
	QueueSize int
	// MaxBatch caps the transactions handed to one Apply call, and how many
	// the receive loop holds back while more of the stream is already
	// buffered. Default 256.
	MaxBatch int
	// ApplyRate caps how many batches are applied per second under
	// sustained load, after bursts of applyBurst: when transactions keep
	// coming, the applier waits for the rest of its interval and takes
	// everything that arrived meanwhile, so that a busy stream costs fewer,
	// larger round trips to the sinks. The cap holds while the stream
	// brings up to lightRate transactions a second; a busier stream gets
	// proportionally fewer batches, down to ApplyRate/maxStretch. A
	// transaction that arrives while the applier is idle is applied at
	// once. 0: no cap.
	ApplyRate int
	// ShutdownTimeout bounds how long a cancelled Run waits for the batch in
	// hand to be applied before it sends the final status update. Default 5s.
	ShutdownTimeout time.Duration
	// MaxBackoff caps the delay between reconnection attempts. Default 30s.
	MaxBackoff time.Duration
	// StandbyPoll is about how often an instance whose slot another
	// consumer holds tries to take it over. Default 3s.
	StandbyPoll time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Start describes the slot a session is about to stream from.
type Start struct {
	// SystemID is the server's system identifier (IDENTIFY_SYSTEM); it
	// changes when the database is restored from a base backup elsewhere.
	SystemID string
	// SlotCreated reports that the slot did not exist and was created now
	// (also after a slot whose WAL was lost was replaced).
	SlotCreated bool
	// WALLost reports that the slot's WAL had been removed (wal_status
	// lost) and the slot was dropped and created again.
	WALLost bool
	// Confirmed is where the server resumes: the slot's confirmed_flush_lsn.
	Confirmed pglogrepl.LSN
}

// Stream consumes one logical replication slot. Create it with New and run it
// with Run; Ready and Status may be called from any goroutine.
type Stream struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	queue   handoff
	acked   atomic.Uint64 // end LSN of the last applied transaction, or a keepalive position
	pending atomic.Int64  // transactions queued or being applied

	streaming atomic.Bool
	reason    atomic.Pointer[string]

	stopApply chan struct{}
	applyDone chan struct{}
	stopOnce  sync.Once
}

// New validates cfg and returns a Stream.
func New(cfg Config) (*Stream, error) {
	switch {
	case cfg.DatabaseURL == "":
		return nil, errors.New("replication: no database URL")
	case cfg.Slot == "" || cfg.Publication == "":
		return nil, errors.New("replication: slot and publication are required")
	case cfg.Begin == nil || cfg.Apply == nil:
		return nil, errors.New("replication: Begin and Apply are required")
	}
	if _, err := pgconn.ParseConfig(cfg.DatabaseURL); err != nil {
		return nil, fmt.Errorf("replication: database URL: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.StatusInterval, 10*time.Second)
	def(&cfg.FeedbackDelay, time.Second)
	def(&cfg.ShutdownTimeout, 5*time.Second)
	def(&cfg.MaxBackoff, 30*time.Second)
	def(&cfg.StandbyPoll, 3*time.Second)
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.Tables == nil {
		cfg.Tables = func() []string { return nil }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Stream{
		cfg:       cfg,
		log:       log,
		m:         newMetrics(cfg.Registerer),
		queue:     newHandoff(cfg.MaxBatch),
		stopApply: make(chan struct{}),
		applyDone: make(chan struct{}),
	}
	s.setReason("starting")
	return s, nil
}

// Ready reports whether the stream is consuming the slot, and why not.
func (s *Stream) Ready() (bool, string) {
	if s.streaming.Load() {
		return true, "streaming"
	}
	return false, *s.reason.Load()
}

func (s *Stream) setReason(r string) { s.reason.Store(&r) }

// Acked returns the position confirmed to the server at the next status update.
func (s *Stream) Acked() pglogrepl.LSN { return pglogrepl.LSN(s.acked.Load()) }

// Run consumes the slot until ctx is done or a configuration error stops it.
// On cancellation it lets the batch being applied finish (up to
// ShutdownTimeout), confirms it to the server and returns nil.
func (s *Stream) Run(ctx context.Context) error {
	applyCtx, cancelApply := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelApply()
	go s.applyLoop(applyCtx)
	stopAfter := context.AfterFunc(ctx, func() {
		time.AfterFunc(s.cfg.ShutdownTimeout, cancelApply)
	})
	defer stopAfter()

	backoff := newBackoff(500*time.Millisecond, s.cfg.MaxBackoff)
	var lastInUseLog time.Time
	for {
		err := s.session(ctx)
		s.streaming.Store(false)
		if ctx.Err() != nil {
			s.drainApplier()
			return nil
		}
		if !IsRetryable(err) {
			s.setReason(err.Error())
			s.drainApplier()
			return err
		}
		delay := backoff.next()
		s.m.reconnects.Inc()
		if IsSlotInUse(err) {
			// A standby polls often, to take over soon after the active
			// instance dies.
			delay = s.cfg.StandbyPoll/2 + rand.N(s.cfg.StandbyPoll/2+1)
			s.m.standby.Set(1)
			s.setReason("standby: slot " + s.cfg.Slot + " is held by another consumer")
			// Expected while another instance is active: say so once a minute.
			if time.Since(lastInUseLog) >= time.Minute {
				s.log.Warn("slot is in use by another consumer; waiting", "slot", s.cfg.Slot, "err", err)
				lastInUseLog = time.Now()
			}
		} else {
			s.setReason(err.Error())
			s.log.Error("replication session failed; reconnecting", "err", err, "retry_in", delay)
		}
		if errors.Is(err, errSessionHealthy) {
			backoff.reset()
		}
		select {
		case <-ctx.Done():
			s.drainApplier()
			return nil
		case <-time.After(delay):
		}
	}
}

// errSessionHealthy wraps the error of a session that streamed for a while,
// so the next attempt starts with a short delay.
var errSessionHealthy = errors.New("session had been streaming")

// drainApplier stops the applier after the batch in hand and waits for it.
func (s *Stream) drainApplier() {
	s.stopOnce.Do(func() { close(s.stopApply) })
	<-s.applyDone
}

func (s *Stream) applyLoop(ctx context.Context) {
	defer close(s.applyDone)
	var taken []Committed
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

// ack moves the applied position forward (never back).
func (s *Stream) ack(lsn pglogrepl.LSN) {
	for {
		cur := s.acked.Load()
		if uint64(lsn) <= cur || s.acked.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}

func (s *Stream) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return nil, configError("database URL: %v", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	dial := cfg.DialFunc
	cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return pollconn.Wrap(c), nil
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "cdcd"
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgconn.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", cfg.Host, err)
	}
	return conn, nil
}

// session runs one connection: set-up checks, then the receive loop.
func (s *Stream) session(ctx context.Context) (err error) {
	s.setReason("connecting")
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())

	tables := s.cfg.Tables()
	created, err := ensurePublication(ctx, conn, s.cfg.Publication, tables)
	if err != nil {
		return err
	}
	if created {
		s.log.Info("created or extended publication", "publication", s.cfg.Publication, "tables", tables)
	}
	slot, err := ensureSlot(ctx, conn, s.cfg.Slot)
	if err != nil {
		return err
	}
	walLost := false
	if slot.walStatus == "lost" {
		// The server removed WAL the slot still needed: it cannot stream
		// again. Replace it; OnStart learns that changes were lost.
		s.log.Error("replication slot lost WAL it needed; dropping and recreating it", "slot", s.cfg.Slot)
		if err := pglogrepl.DropReplicationSlot(ctx, conn, s.cfg.Slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
			return fmt.Errorf("drop lost slot %q: %w", s.cfg.Slot, err)
		}
		if slot, err = ensureSlot(ctx, conn, s.cfg.Slot); err != nil {
			return err
		}
		walLost = true
	}
	if slot.created {
		s.log.Info("created replication slot", "slot", s.cfg.Slot, "lsn", slot.confirmed.String())
	}
	// The broken build also skips gap detection, which would otherwise
	// notice what it lost and invalidate everything.
	if s.cfg.OnStart != nil && !ackBeforeApply {
		sys, err := pglogrepl.IdentifySystem(ctx, conn)
		if err != nil {
			return fmt.Errorf("identify system: %w", err)
		}
		st := Start{SystemID: sys.SystemID, SlotCreated: slot.created, WALLost: walLost, Confirmed: slot.confirmed}
		if err := s.cfg.OnStart(ctx, st); err != nil {
			return fmt.Errorf("start of session: %w", err)
		}
	}
	dec, err := newSessionDecoder(ctx, conn, s.cfg.DatabaseURL, s.cfg.Publication, tables, s.log)
	if err != nil {
		return err
	}
	defer dec.close()
	s.ack(slot.confirmed)

	// Protocol v2 streams large in-progress transactions (PostgreSQL 14+)
	// instead of spilling them to disk on the server until they commit.
	args := []string{"proto_version '1'"}
	if rows, err := query(ctx, conn, "SHOW server_version_num"); err == nil && len(rows) == 1 && atoi(rows[0][0]) >= 140000 {
		args = []string{"proto_version '2'", "streaming 'on'"}
	}
	args = append(args, "publication_names "+quoteLiteral(quoteIdent(s.cfg.Publication)))
	err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: args,
	})
	if err != nil {
		if sqlstate(err) == sqlstateObjectNotInState {
			return configError("start replication on slot %q: %v", s.cfg.Slot, err)
		}
		return fmt.Errorf("start replication on slot %q: %w", s.cfg.Slot, err)
	}
	s.m.standby.Set(0)
	s.log.Info("streaming", "slot", s.cfg.Slot, "publication", s.cfg.Publication, "lsn", s.Acked().String())
	s.streaming.Store(true)
	s.setReason("streaming")
	stopWake := context.AfterFunc(ctx, func() { _ = conn.Conn().SetReadDeadline(time.Now()) })
	defer stopWake()

	started := time.Now()
	rl := receiver{s: s, conn: conn, dec: dec, persisted: slot.confirmed}
	err = rl.loop(ctx)
	if ctx.Err() != nil {
		// Shutdown: let the applier finish what it holds, then confirm it.
		s.drainApplier()
		if serr := rl.sendStatus(false); serr != nil {
			s.log.Warn("final status update failed", "err", serr)
		} else if serr := rl.endCopy(); serr != nil {
			s.log.Warn("final status update sent, but the server did not confirm the end of the stream", "lsn", s.Acked().String(), "err", serr)
		} else {
			s.log.Info("confirmed position at shutdown", "lsn", s.Acked().String())
		}
		return nil
	}
	if time.Since(started) > time.Minute {
		err = fmt.Errorf("%w: %w", errSessionHealthy, err)
	}
	return err
}

// receiver is the state of one session's receive loop. Only the goroutine
// that runs loop touches it.
type receiver struct {
	s    *Stream
	conn *pgconn.PgConn
	dec  *decoder

	tx          Tx
	inTx        bool
	begin       Begin
	serverEnd   pglogrepl.LSN
	received    pglogrepl.LSN
	lastSent    time.Time
	sentFlush   pglogrepl.LSN
	nextStatus  time.Time
	deadlineSet time.Time
	persisted   pglogrepl.LSN // highest position BeforeConfirm accepted

	// held are committed transactions not yet handed to the applier;
	// holdUntil is set when the loop first sees them held, and cleared when
	// they are handed over.
	held      []Committed
	holdUntil time.Time

	// Streamed (protocol v2) transactions in progress, by top-level xid,
	// and the one whose stream block is open.
	streams map[uint32]*streamedTx
	stream  *streamedTx
}

// streamedTx is an in-progress transaction the server streams in blocks.
// Its changes go to one part per run of a (sub)transaction's changes, so
// that a subtransaction's abort drops exactly its parts.
type streamedTx struct {
	xid   uint32
	parts []streamPart
}

type streamPart struct {
	subxid uint32
	tx     Tx
}

func (r *receiver) loop(ctx context.Context) error {
	s := r.s
	if err := r.sendStatus(false); err != nil {
		return err
	}
	for {
		now := time.Now()
		if !now.Before(r.nextStatus) {
			// Periodic update. When nothing is in flight, ask for a
			// keepalive: its position lets an idle slot move forward.
			if err := r.sendStatus(r.idle()); err != nil {
				return err
			}
		} else if s.Acked() > r.sentFlush && now.Sub(r.lastSent) >= s.cfg.FeedbackDelay {
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
func (r *receiver) setDeadline(now time.Time) {
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

func (r *receiver) armDeadline(d time.Time) {
	if !d.Equal(r.deadlineSet) {
		_ = r.conn.Conn().SetReadDeadline(d)
		r.deadlineSet = d
	}
}

// idle reports whether nothing received is unapplied: then a keepalive's
// position may be confirmed.
func (r *receiver) idle() bool {
	return !r.inTx && len(r.streams) == 0 && len(r.held) == 0 && r.s.pending.Load() == 0
}

func (r *receiver) sendStatus(replyRequested bool) error {
	flush := r.s.Acked()
	if flush == 0 {
		return errors.New("refusing to send a zero flush position")
	}
	if r.s.cfg.BeforeConfirm != nil && flush > r.persisted {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := r.s.cfg.BeforeConfirm(ctx, flush)
		cancel()
		if err != nil && !ackBeforeApply {
			r.s.log.Warn("cannot record the position to confirm; confirming the previous one", "lsn", flush.String(), "err", err)
			flush = r.persisted
		} else {
			r.persisted = flush
		}
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
func (r *receiver) endCopy() error {
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

func (r *receiver) handleCopyData(ctx context.Context, data []byte) error {
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

func (r *receiver) handleMessage(ctx context.Context, msg []byte) error {
	ev, err := r.dec.decode(msg)
	if err != nil {
		return err
	}
	if handled, err := r.handleStream(ctx, ev); handled || err != nil {
		return err
	}
	switch {
	case ev.begin != nil:
		if r.inTx {
			return fmt.Errorf("%w: Begin of xid %d inside xid %d", ErrMalformed, ev.begin.Xid, r.begin.Xid)
		}
		r.inTx = true
		r.begin = *ev.begin
		r.tx = r.s.cfg.Begin(r.begin)
	case ev.commit != nil:
		if !r.inTx {
			return fmt.Errorf("%w: Commit outside a transaction", ErrMalformed)
		}
		c := Committed{Commit: *ev.commit, Tx: r.tx}
		c.Xid = r.begin.Xid
		r.tx, r.inTx = nil, false
		return r.deliver(ctx, c)
	case ev.change != nil:
		if !r.inTx {
			return fmt.Errorf("%w: change outside a transaction", ErrMalformed)
		}
		r.s.m.countChange(ev.change)
		r.tx.Add(ev.change)
	case ev.truncate != nil:
		if !r.inTx {
			return fmt.Errorf("%w: truncate outside a transaction", ErrMalformed)
		}
		for _, c := range ev.truncate {
			r.s.m.countChange(c)
			r.tx.Add(c)
		}
	case ev.relation != nil:
		r.s.m.attach(ev.relation)
	}
	return nil
}

// handleStream handles protocol v2 streaming: stream blocks, changes inside
// them, and the stream commit or abort that ends a transaction.
func (r *receiver) handleStream(ctx context.Context, ev event) (bool, error) {
	switch {
	case ev.streamStart != nil:
		if r.streams == nil {
			r.streams = make(map[uint32]*streamedTx)
		}
		st := r.streams[ev.streamStart.Xid]
		if st == nil {
			st = &streamedTx{xid: ev.streamStart.Xid}
			r.streams[st.xid] = st
		}
		r.stream = st
	case ev.streamStop:
		r.stream = nil
	case r.stream != nil && (ev.change != nil || ev.truncate != nil):
		st := r.stream
		if n := len(st.parts); n == 0 || st.parts[n-1].subxid != ev.xid {
			st.parts = append(st.parts, streamPart{subxid: ev.xid, tx: r.s.cfg.Begin(Begin{Xid: st.xid})})
		}
		tx := st.parts[len(st.parts)-1].tx
		if ev.change != nil {
			r.s.m.countChange(ev.change)
			tx.Add(ev.change)
		}
		for _, c := range ev.truncate {
			r.s.m.countChange(c)
			tx.Add(c)
		}
	case r.stream != nil && ev.relation != nil:
		r.s.m.attach(ev.relation)
	case ev.streamAbort != nil:
		a := ev.streamAbort
		st := r.streams[a.Xid]
		if st == nil {
			return true, nil
		}
		if a.SubXid == a.Xid {
			delete(r.streams, a.Xid)
			return true, nil
		}
		kept := st.parts[:0]
		for _, p := range st.parts {
			if p.subxid != a.SubXid {
				kept = append(kept, p)
			}
		}
		clear(st.parts[len(kept):])
		st.parts = kept
	case ev.streamCommit != nil:
		c := ev.streamCommit
		st := r.streams[c.Xid]
		delete(r.streams, c.Xid)
		var tx Tx
		if st != nil && len(st.parts) > 0 {
			tx = st.parts[0].tx
			for _, p := range st.parts[1:] {
				if m, ok := tx.(Merger); ok {
					m.Merge(p.tx)
				} else {
					return true, fmt.Errorf("streamed transaction %d: its Tx cannot merge subtransaction parts", c.Xid)
				}
			}
		} else {
			tx = r.s.cfg.Begin(Begin{Xid: c.Xid, FinalLSN: c.CommitLSN, CommitTime: c.CommitTime})
		}
		return true, r.deliver(ctx, Committed{Commit: *c, Tx: tx})
	default:
		return false, nil
	}
	return true, nil
}

// deliver holds a committed transaction back for the applier. Held
// transactions are handed over together when the receive loop is about to
// wait for the server (see loop), or once MaxBatch of them are held: while
// the stream arrives faster than single transactions can be applied, the
// applier gets them in batches, one Redis round trip each, without waiting
// for anything that has not arrived yet.
func (r *receiver) deliver(ctx context.Context, c Committed) error {
	r.held = append(r.held, c)
	if len(r.held) >= r.s.cfg.MaxBatch {
		return r.flush(ctx)
	}
	return nil
}

// flush hands the held transactions to the applier. While QueueSize
// transactions wait there it stops reading the stream, and keeps the
// connection alive with status updates.
func (r *receiver) flush(ctx context.Context) error {
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
	return nil
}

// handoff carries committed transactions from the receive loop to the
// applier. The two sides swap buffers, so a steady stream allocates nothing.
type handoff struct {
	mu    sync.Mutex
	txs   []Committed
	batch int           // a full batch
	ready chan struct{} // signalled when txs becomes non-empty
	full  chan struct{} // signalled when txs reaches a full batch
	space chan struct{} // signalled when the applier takes txs
}

func newHandoff(batch int) handoff {
	return handoff{batch: batch, ready: make(chan struct{}, 1), full: make(chan struct{}, 1), space: make(chan struct{}, 1)}
}

// put appends txs and returns how many wait now.
func (h *handoff) put(txs []Committed) int {
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
func (h *handoff) take(spare []Committed) []Committed {
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

func (h *handoff) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.txs)
}

// backoff is capped exponential backoff with jitter.
type backoff struct {
	base, max, cur time.Duration
}

func newBackoff(base, max time.Duration) *backoff { return &backoff{base: base, max: max} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	// Full jitter over the upper half keeps instances from retrying in step.
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur = 0 }

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
