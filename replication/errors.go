package replication

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Sentinel errors. Classify with errors.Is or the functions below, never by
// matching strings.
var (
	// ErrMalformed reports a pgoutput message that could not be decoded. The
	// session is dropped and the stream resumes from the confirmed position.
	ErrMalformed = errors.New("malformed pgoutput message")

	// ErrConfig marks a problem only an operator can fix (a publication
	// missing rule tables, a slot created with another plugin, wal_level
	// below logical). Retrying does not help; Run returns it.
	ErrConfig = errors.New("replication configuration")

	// ErrSilent reports a replication connection that delivered nothing
	// for longer than Config.SilenceTimeout although cdcd asked the server
	// for a reply: the link is presumed dead, dropped and reconnected.
	ErrSilent = errors.New("replication connection went silent")

	// ErrSuperseded is returned by Config.OnStart or Config.BeforeConfirm
	// when another instance, or a session on another server, owns the
	// state they record: the session ends without confirming anything
	// more, and the next one finds out who holds the slot.
	ErrSuperseded = errors.New("superseded")

	// ErrResync is returned by Config.BeforeConfirm when the sinks lost
	// work they had acknowledged (a Redis failover that lost writes): the
	// session ends without confirming anything more, and the next one's
	// OnStart accounts for the loss.
	ErrResync = errors.New("sinks lost acknowledged work")
)

// PublicationError names the rule tables an existing publication lacks.
type PublicationError struct {
	Publication string
	Missing     []string
}

func (e *PublicationError) Error() string {
	return fmt.Sprintf("publication %q lacks rule tables %s: add them with ALTER PUBLICATION %s ADD TABLE %s",
		e.Publication, strings.Join(e.Missing, ", "), pgx.Identifier{e.Publication}.Sanitize(), strings.Join(e.Missing, ", "))
}

// Unwrap classifies the error as ErrConfig.
func (e *PublicationError) Unwrap() error { return ErrConfig }

// SQLSTATE codes that decide how a failure is handled.
const (
	sqlstateObjectInUse      = "55006" // replication slot is active for PID
	sqlstateObjectNotInState = "55000" // e.g. logical decoding requires wal_level >= logical
	sqlstateUndefinedTable   = "42P01"
	sqlstateUndefinedObject  = "42704"
	sqlstateInvalidName      = "42602"
)

// SlotInUseError reports a slot that another session streams from, seen
// before this one tried to take it.
type SlotInUseError struct {
	Slot, PID string
}

func (e *SlotInUseError) Error() string {
	return fmt.Sprintf("replication slot %q is active for PID %s", e.Slot, e.PID)
}

// IsSlotInUse reports whether err says another consumer holds the slot.
func IsSlotInUse(err error) bool {
	var inUse *SlotInUseError
	return errors.As(err, &inUse) || sqlstate(err) == sqlstateObjectInUse
}

// IsRetryable reports whether a session failing with err should be retried.
// Everything is, except configuration problems.
func IsRetryable(err error) bool { return err != nil && !errors.Is(err, ErrConfig) }

func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// configError marks err as an operator problem.
func configError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}
