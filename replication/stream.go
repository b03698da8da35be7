package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cdcd/cdcd/internal/retry"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is what a Stream needs. DatabaseURL, Slot, Publication, Begin and
// Apply are required. T is the transaction type the caller evaluates
// changes into.
type Config[T Tx[T]] struct {
	// DatabaseURL is a libpq URL or DSN; replication=database is added.
	DatabaseURL string
	Slot        string
	Publication string

	// Tables returns the schema-qualified tables the publication must hold.
	// It is called at the start of every session.
	Tables func() []string

	// Begin is called for every transaction the stream opens; the Tx it
	// returns receives the transaction's changes and travels with it to Apply.
	Begin func(Begin) T

	// Apply applies a batch of consecutive committed transactions, in commit
	// order. It runs in its own goroutine and may block as long as it needs:
	// the stream keeps the connection alive meanwhile. It must return nil only
	// once every transaction of the batch is applied; an error (only when ctx
	// is done) leaves the batch unacknowledged.
	Apply func(ctx context.Context, batch []Committed[T]) error

	// CheckPublication, when set, is called once a session has ensured the
	// publication and before it touches the slot, to check that the
	// publication shows every change the caller needs. An error wrapping
	// ErrConfig stops Run; any other ends the session (it is retried).
	CheckPublication func(ctx context.Context) error

	// OnStart, when set, is called once a session has checked its slot and
	// before it streams. An error ends the session (it is retried).
	OnStart func(ctx context.Context, st Start) error
	// BeforeConfirm, when set, is called with a position before it is first
	// confirmed to the server; the position is confirmed only if it returns
	// nil. It lets the caller record what it confirmed where it can later
	// tell a gap from its own progress. It is called every FeedbackDelay,
	// on a goroutine of its own, never in the receive loop, with the
	// highest position that may be confirmed; while no new position comes,
	// with the last one it accepted, so that it finds sinks that lost
	// writes (a Redis failover) on an idle stream too. Calls do not
	// overlap, and the last, at shutdown, follows the applier's last batch.
	BeforeConfirm func(ctx context.Context, lsn pglogrepl.LSN) error
	// ConfirmTimeout bounds a BeforeConfirm call. Default 2s.
	ConfirmTimeout time.Duration
	// Confirmable, when set, caps a position about to be confirmed: it
	// returns the highest position at or below lsn that the sinks hold
	// durably (work they finish beside the ordered path, such as pattern
	// invalidations, holds it back).
	Confirmable func(lsn pglogrepl.LSN) pglogrepl.LSN

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
	// SilenceTimeout is how long the replication connection may deliver
	// nothing before it is presumed dead (a blackholed route or a dead NAT
	// entry sends no FIN and no RST, and TCP gives up only after about 15
	// minutes). cdcd asks the server for a reply whenever it has heard
	// nothing for StatusInterval, so a live server answers well within it.
	// 0: the server's wal_sender_timeout (the server ends a session as
	// silent as that from its side), and 60s when that is off; never less
	// than twice StatusInterval.
	SilenceTimeout time.Duration
	// RawSockets does the replication connection's reads and writes as raw
	// system calls (internal/pollconn), which spares the Go runtime a
	// wake-up of its monitor thread on every message of a quiet stream.
	// It has no effect where pollconn.Available is false.
	RawSockets bool

	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Start describes the slot a session is about to stream from.
type Start struct {
	// SystemID is the server's system identifier (IDENTIFY_SYSTEM); it
	// changes when the database is restored from a base backup elsewhere.
	SystemID string
	// Timeline is the server's timeline; it changes on a promotion and on
	// a point-in-time recovery.
	Timeline int32
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
type Stream[T Tx[T]] struct {
	cfg Config[T]
	log *slog.Logger
	m   *metrics

	queue handoff[T]
	// acked is the end LSN of the last applied transaction, or a keepalive
	// position, of the current session. Each session sets it to its own
	// slot's position before streaming, once nothing of the session before
	// is left in flight: a position carried over from another session
	// could be another server's, which the new server would accept and
	// resume from, skipping everything before it.
	acked   atomic.Uint64
	pending atomic.Int64 // transactions queued or being applied

	// abandoned is the server process of the last session dropped as
	// silent. Only Run's goroutine uses it.
	abandoned string

	streaming atomic.Bool
	reason    atomic.Pointer[string]

	stopApply chan struct{}
	applyDone chan struct{}
	stopOnce  sync.Once
}

// New validates cfg and returns a Stream.
func New[T Tx[T]](cfg Config[T]) (*Stream[T], error) {
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
	def(&cfg.ConfirmTimeout, 2*time.Second)
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
	s := &Stream[T]{
		cfg:       cfg,
		log:       log,
		m:         newMetrics(cfg.Registerer),
		queue:     newHandoff[T](cfg.MaxBatch),
		stopApply: make(chan struct{}),
		applyDone: make(chan struct{}),
	}
	s.setReason("starting")
	return s, nil
}

// Ready reports whether the stream is consuming the slot, and why not.
func (s *Stream[T]) Ready() (bool, string) {
	if s.streaming.Load() {
		return true, "streaming"
	}
	return false, *s.reason.Load()
}

func (s *Stream[T]) setReason(r string) { s.reason.Store(&r) }

// Acked returns the position confirmed to the server at the next status update.
func (s *Stream[T]) Acked() pglogrepl.LSN { return pglogrepl.LSN(s.acked.Load()) }

// confirmTarget returns Acked, capped by Config.Confirmable: the highest
// position the sinks hold.
func (s *Stream[T]) confirmTarget() pglogrepl.LSN {
	flush := s.Acked()
	if s.cfg.Confirmable != nil {
		flush = min(flush, s.cfg.Confirmable(flush))
	}
	return flush
}

// Run consumes the slot until ctx is done or a configuration error stops it.
// On cancellation it lets the batch being applied finish (up to
// ShutdownTimeout), confirms it to the server and returns nil.
func (s *Stream[T]) Run(ctx context.Context) error {
	applyCtx, cancelApply := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelApply()
	go s.applyLoop(applyCtx)
	stopAfter := context.AfterFunc(ctx, func() {
		time.AfterFunc(s.cfg.ShutdownTimeout, cancelApply)
	})
	defer stopAfter()

	backoff := retry.Backoff{Min: 500 * time.Millisecond, Max: s.cfg.MaxBackoff, Jitter: true}
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
		if errors.Is(err, errSessionHealthy) {
			// Before the delay is drawn: the reconnection right after a
			// healthy session is the one that must come soon.
			backoff.Reset()
		}
		delay := backoff.Next()
		s.m.reconnects.Inc()
		if IsSlotInUse(err) {
			// A standby polls often, to take over soon after the active
			// instance dies.
			delay = retry.Jitter(s.cfg.StandbyPoll)
			s.m.standby.Set(1)
			s.setReason("standby: slot " + s.cfg.Slot + " is held by another consumer")
			// Expected while another instance is active: say so once a minute.
			if time.Since(lastInUseLog) >= time.Minute {
				s.log.Warn("slot is in use by another consumer; waiting", "slot", s.cfg.Slot, "err", err)
				lastInUseLog = time.Now()
			}
		} else {
			s.setReason("reconnecting; the last session ended with: " + err.Error())
			s.log.Error("replication session failed; reconnecting", "err", err, "retry_in", delay)
		}
		if retry.Wait(ctx, delay) != nil {
			s.drainApplier()
			return nil
		}
	}
}

// errSessionHealthy wraps the error of a session that streamed for a while,
// so the next attempt starts with a short delay.
var errSessionHealthy = errors.New("session had been streaming")

// ack moves the applied position forward (never back).
func (s *Stream[T]) ack(lsn pglogrepl.LSN) {
	for {
		cur := s.acked.Load()
		if uint64(lsn) <= cur || s.acked.CompareAndSwap(cur, uint64(lsn)) {
			return
		}
	}
}
