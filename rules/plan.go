package rules

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Reasons a section is invalidated by pattern rather than by exact keys.
// They label cdcd_pattern_invalidations_total.
const (
	ReasonTruncate      = "truncate"        // a truncate names no rows
	ReasonOldRowUnknown = "old_row_unknown" // UPDATE/DELETE without the old value (replica identity)
	ReasonValueUnknown  = "value_unknown"   // unchanged TOAST value with no old row to read it from
	ReasonMissingColumn = "missing_column"  // the relation has no such column
	ReasonEscalated     = "escalated"       // too many distinct keys in one transaction
	ReasonGap           = "gap"             // cdcd cannot prove it saw every change
)

// Row sources of an exact key.
const (
	FromNew     = "new"
	FromOld     = "old"
	FromLiteral = "literal"
)

// Key is one exact key to delete.
type Key struct {
	Key     string `json:"key"`
	Section string `json:"section"`
	Rule    string `json:"rule"` // the rule or invariant that produced it first
	From    string `json:"from"` // FromNew, FromOld or FromLiteral
}

// Pattern is every key of a section's key template: all of them are to be
// deleted. Template says which keys that is, for any sink; Pattern is the
// same set as a Redis glob (SCAN MATCH).
type Pattern struct {
	Pattern  string    `json:"pattern"`
	Section  string    `json:"section"`
	Rule     string    `json:"rule"`
	Reason   string    `json:"reason"`
	Template *Template `json:"-"`
}

// Matches reports whether key is one of the pattern's keys.
func (p Pattern) Matches(key string) bool { return p.Template.Matches(key) }

// Revision is a revision key set to the commit LSN. With IsPattern, every
// existing key of the revision template Template is set, and Key is that
// set as a Redis glob.
type Revision struct {
	Key       string    `json:"key"`
	Section   string    `json:"section"`
	IsPattern bool      `json:"is_pattern,omitempty"`
	Template  *Template `json:"-"`
}

// Matches reports whether key is the revision's key, or with IsPattern one
// of its keys.
func (r Revision) Matches(key string) bool {
	if !r.IsPattern {
		return key == r.Key
	}
	return r.Template.Matches(key)
}

// Message is one channel message.
type Message struct {
	Channel string
	Section string
	Payload []byte
}

// ColumnValue is a column's text value; Null marks SQL NULL.
type ColumnValue struct {
	Column string  `json:"column"`
	Value  *string `json:"value"`
}

// ColumnChange is a column's value before and after an update.
type ColumnChange struct {
	Column string  `json:"column"`
	Old    *string `json:"old"`
	New    *string `json:"new"`
}

// Violation is a broken invariant.
type Violation struct {
	Invariant  string         `json:"invariant"`
	Severity   string         `json:"severity"`
	Message    string         `json:"message"`
	Table      string         `json:"table"`
	PrimaryKey []ColumnValue  `json:"primary_key"`
	Changed    []ColumnChange `json:"changed"`
	Required   []ColumnChange `json:"required"`
	LSN        string         `json:"lsn"`
	Xid        uint32         `json:"xid"`
	CommitTime time.Time      `json:"commit_time"`
}

// Plan is what one committed transaction requires of the sinks.
type Plan struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN
	CommitTime time.Time
	Changes    int

	Keys       []Key
	Patterns   []Pattern
	Revisions  []Revision
	Messages   []Message
	Violations []Violation
	// MissingColumns lists the columns the rules name that a changed
	// table lacks (a schema change the rules did not follow).
	MissingColumns []MissingColumn
	// Unchecked lists the invariants some rows of the transaction could
	// not be checked against.
	Unchecked []UncheckedInvariant

	// Inexact marks a plan that may hold changes of a rolled-back
	// subtransaction (see replication.Committed): its invalidations are
	// wider than needed, and a violation in it may be a false alarm.
	Inexact bool
	// Gap marks the plan of a gap: every section, with its revisions set
	// to the plan's position even where that is lower than the value they
	// hold (the server, and with it the LSN sequence, may have changed).
	Gap bool
}

// Reasons an invariant could not be checked for some rows.
const (
	// UncheckedBudget: the transaction's row states outgrew its byte
	// budget (WithMaxTxBytes); the invariant was no longer checked in it.
	UncheckedBudget = "budget"
	// UncheckedRulesChanged: the invariant watched other columns in the
	// rules of a later part of a streamed transaction (a reload).
	UncheckedRulesChanged = "rules_changed"
)

// UncheckedInvariant counts the rows of one table an invariant could not be
// checked for, and why.
type UncheckedInvariant struct {
	Invariant string
	Table     string
	Reason    string
	// Rows is how many rows were left unchecked; once the budget gave the
	// invariant up, a row updated twice counts twice.
	Rows int
}

// Empty reports whether the plan asks nothing of any sink.
func (p *Plan) Empty() bool {
	return len(p.Keys) == 0 && len(p.Patterns) == 0 && len(p.Revisions) == 0 &&
		len(p.Messages) == 0 && len(p.Violations) == 0
}
