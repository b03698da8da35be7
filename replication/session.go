package replication

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/cdcd/cdcd/internal/pollconn"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func (s *Stream[T]) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.cfg.DatabaseURL)
	if err != nil {
		return nil, configError("database URL: %v", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	if s.cfg.RawSockets {
		dial := cfg.DialFunc
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return pollconn.Wrap(c), nil
		}
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
func (s *Stream[T]) session(ctx context.Context) (err error) {
	// After a failure Run left the reason it ended on, which stays while
	// this session connects (through a dead route that takes a while).
	if *s.reason.Load() == "starting" {
		s.setReason("connecting")
	}
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
	if s.cfg.CheckPublication != nil {
		if err := s.cfg.CheckPublication(ctx); err != nil {
			return err
		}
	}
	slot, err := ensureSlot(ctx, conn, s.cfg.Slot)
	if err != nil {
		return err
	}
	if slot.active && s.abandoned != "" && slot.activePID == s.abandoned {
		// The server still serves the session cdcd dropped as silent:
		// the walsender only notices after wal_sender_timeout. End it
		// rather than stand by for cdcd's own ghost.
		if err := endBackend(ctx, conn, s.cfg.Slot, slot.activePID); err != nil {
			return err
		}
		s.log.Warn("ended the server side of the replication connection dropped as silent", "slot", s.cfg.Slot, "pid", slot.activePID)
		if slot, err = ensureSlot(ctx, conn, s.cfg.Slot); err != nil {
			return err
		}
	}
	if slot.active {
		// Another consumer streams from it: it alone may write the state
		// OnStart records. Wait as a standby.
		return &SlotInUseError{Slot: s.cfg.Slot, PID: slot.activePID}
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
	// Nothing of an earlier session may be acknowledged in this one: its
	// positions may be another server's. Its transactions are applied
	// first (the server sends them again anyway).
	if err := s.awaitApplied(ctx); err != nil {
		return err
	}
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		return fmt.Errorf("identify system: %w", err)
	}
	// The broken build also skips gap detection, which would otherwise
	// notice what it lost and invalidate everything.
	if s.cfg.OnStart != nil && !ackBeforeApply {
		st := Start{SystemID: sys.SystemID, Timeline: sys.Timeline, SlotCreated: slot.created, WALLost: walLost, Confirmed: slot.confirmed}
		if err := s.cfg.OnStart(ctx, st); err != nil {
			return fmt.Errorf("start of session: %w", err)
		}
	}
	dec, err := newSessionDecoder(ctx, conn, s.cfg.DatabaseURL, s.cfg.Publication, tables, s.log)
	if err != nil {
		return err
	}
	defer dec.close()
	// The session acknowledges from its own slot's position: only what
	// this server sent can move it.
	s.acked.Store(uint64(slot.confirmed))
	silence := s.silenceTimeout(ctx, conn)

	// Protocol v2 streams large in-progress transactions (PostgreSQL 14+)
	// instead of spilling them to disk on the server until they commit.
	args := []string{"proto_version '1'"}
	if rows, err := query(ctx, conn, "SHOW server_version_num"); err == nil && len(rows) == 1 && rows[0][0] >= "140000" {
		args = []string{"proto_version '2'", "streaming 'on'"}
	}
	args = append(args, "publication_names "+quoteLiteral(pgx.Identifier{s.cfg.Publication}.Sanitize()))
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
	rl := receiver[T]{s: s, conn: conn, dec: dec, asm: newAssembler(s.cfg.Begin),
		silence: silence, lastRecv: started}
	stopConfirmer := func() {}
	if s.cfg.BeforeConfirm != nil {
		rl.conf = newConfirmer(s.cfg.BeforeConfirm, s.confirmTarget, slot.confirmed, s.cfg.ConfirmTimeout, s.cfg.FeedbackDelay, s.log,
			func() { _ = conn.Conn().SetReadDeadline(time.Now()) })
		confCtx, cancel := context.WithCancel(ctx)
		go rl.conf.run(confCtx)
		stopConfirmer = func() { rl.conf.stop(cancel) }
	}
	defer stopConfirmer()
	err = rl.loop(ctx)
	stopConfirmer()
	if errors.Is(err, ErrSilent) {
		s.abandoned = strconv.FormatUint(uint64(conn.PID()), 10)
	}
	if ctx.Err() != nil {
		// Shutdown: let the applier finish what it holds, then confirm it.
		s.drainApplier()
		if rl.conf != nil && s.confirmTarget() > rl.conf.Secured() {
			if serr := rl.conf.secure(context.Background(), s.confirmTarget(), false); serr != nil {
				s.log.Warn("cannot record the position to confirm at shutdown", "err", serr)
			}
		}
		if serr := rl.sendStatus(false); serr != nil {
			s.log.Warn("final status update failed", "err", serr)
		} else if serr := rl.endCopy(); serr != nil {
			s.log.Warn("final status update sent, but the server did not confirm the end of the stream", "lsn", s.Acked().String(), "err", serr)
		} else {
			s.log.Info("confirmed position at shutdown", "lsn", rl.sentFlush.String())
		}
		return nil
	}
	if time.Since(started) > time.Minute {
		err = fmt.Errorf("%w: %w", errSessionHealthy, err)
	}
	return err
}

// endBackend terminates the backend pid, which holds slot, and waits until
// it released the slot.
func endBackend(ctx context.Context, conn *pgconn.PgConn, slot, pid string) error {
	if _, err := strconv.ParseUint(pid, 10, 32); err != nil {
		return fmt.Errorf("end backend %q: not a process id", pid)
	}
	if _, err := query(ctx, conn, "SELECT pg_terminate_backend("+pid+")"); err != nil {
		return fmt.Errorf("end backend %s that holds slot %q: %w", pid, slot, err)
	}
	for range 50 {
		rows, err := query(ctx, conn, "SELECT 1 FROM pg_replication_slots WHERE active_pid = "+pid)
		if err != nil || len(rows) == 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// awaitApplied waits until no transaction is queued or being applied.
func (s *Stream[T]) awaitApplied(ctx context.Context) error {
	if s.pending.Load() == 0 {
		return nil
	}
	s.setReason("applying the previous session's transactions")
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for s.pending.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// silenceTimeout is SilenceTimeout, or derived from the server's
// wal_sender_timeout.
func (s *Stream[T]) silenceTimeout(ctx context.Context, conn *pgconn.PgConn) time.Duration {
	d := s.cfg.SilenceTimeout
	if d <= 0 {
		d = time.Minute
		if rows, err := query(ctx, conn, "SHOW wal_sender_timeout"); err == nil && len(rows) == 1 {
			if v, ok := parseSetting(rows[0][0]); ok && v > 0 {
				d = v
			}
		}
	}
	return max(d, 2*s.cfg.StatusInterval)
}

// parseSetting parses a PostgreSQL time setting as SHOW prints it: "60s",
// "1min", "500ms", "0"; a bare number is in milliseconds (the unit of
// wal_sender_timeout).
func parseSetting(v string) (time.Duration, bool) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"ms", time.Millisecond}, {"min", time.Minute}, {"s", time.Second}, {"h", time.Hour}, {"d", 24 * time.Hour}}
	unit := time.Millisecond
	for _, u := range units {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, unit = n, u.unit
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(n) * unit, true
}
