package replication

import (
	"time"

	"github.com/jackc/pglogrepl"
)

// Op is the kind of a row change.
type Op uint8

// The four operations pgoutput publishes.
const (
	OpInsert Op = iota + 1
	OpUpdate
	OpDelete
	OpTruncate
)

var opNames = [...]string{OpInsert: "insert", OpUpdate: "update", OpDelete: "delete", OpTruncate: "truncate"}

// String returns the lower-case name used in rules.json and metric labels.
func (o Op) String() string {
	if int(o) < len(opNames) && opNames[o] != "" {
		return opNames[o]
	}
	return "unknown"
}

// ParseOp is the inverse of Op.String.
func ParseOp(s string) (Op, bool) {
	for i, n := range opNames {
		if n != "" && n == s {
			return Op(i), true
		}
	}
	return 0, false
}

// Replica identity settings as sent in a Relation message (pg_class.relreplident).
const (
	IdentityDefault byte = 'd'
	IdentityFull    byte = 'f'
	IdentityIndex   byte = 'i'
	IdentityNothing byte = 'n'
)

// Column describes one published column of a relation.
type Column struct {
	Name    string
	TypeOID uint32
	// Identity is set for columns that are part of the replica identity as the
	// server announced it. Under REPLICA IDENTITY FULL every column is.
	Identity bool
}

// Relation is the decoded form of a pgoutput Relation message. Columns are in
// the publication's order (generated columns excluded), which is the order of
// values in every tuple of this relation.
//
// A Relation is immutable once published to a Tx: the stream replaces the
// cache entry with a new value when the server re-sends the relation.
type Relation struct {
	ID              uint32
	Namespace       string
	Name            string
	ReplicaIdentity byte
	Columns         []Column
	// PrimaryKey holds the indexes in Columns of the table's primary key, read
	// from the catalog at connect time. Nil when the table has none or the
	// catalog was not consulted.
	PrimaryKey []int
	// Names lists the schema-qualified tables whose rules apply to this
	// relation's changes: its own name, then its ancestors' nearest first
	// (a partition's changes are its partitioned table's changes), then,
	// for a partitioned table, its partitions' (under
	// publish_via_partition_root their changes arrive under its name and
	// cannot be told apart). Nil means the relation's own name only.
	Names []string
}

// Table returns the schema-qualified name, e.g. "public.tasks".
func (r *Relation) Table() string { return r.Namespace + "." + r.Name }

// MatchNames returns Names, or the relation's own name when Names is nil.
func (r *Relation) MatchNames() []string {
	if len(r.Names) > 0 {
		return r.Names
	}
	return []string{r.Table()}
}

// ColumnIndex returns the position of the named column, or -1.
func (r *Relation) ColumnIndex(name string) int {
	for i := range r.Columns {
		if r.Columns[i].Name == name {
			return i
		}
	}
	return -1
}

// Kind tells how a column value was sent.
type Kind byte

// Value kinds, as pgoutput encodes them. Absent marks a column the tuple does
// not describe (a non-identity column of a key-only old tuple, or no tuple).
const (
	Absent    Kind = 0
	Null      Kind = 'n'
	Unchanged Kind = 'u' // unchanged TOASTed value: not sent, did not change
	Text      Kind = 't'
	Binary    Kind = 'b'
)

// Value is one column of a tuple. Data is valid only while the Tx's Add call
// runs: it may point into the connection's receive buffer. Copy what you keep.
type Value struct {
	Kind Kind
	Data []byte
}

// TupleKind tells which tuple a Change carries as its old row.
type TupleKind byte

// Old tuple kinds.
const (
	NoTuple  TupleKind = 0
	KeyTuple TupleKind = 'K' // replica identity columns only
	OldTuple TupleKind = 'O' // the whole old row (REPLICA IDENTITY FULL)
	NewTuple TupleKind = 'N'
)

// Tuple is a row image: one Value per column of the relation.
type Tuple struct {
	Kind   TupleKind
	Values []Value
}

// Change is one row change (or one truncated relation) inside a transaction.
type Change struct {
	Op  Op
	Rel *Relation
	Old Tuple // UPDATE (K or O, or none) and DELETE (K or O)
	New Tuple // INSERT and UPDATE
	// TruncateOptions carries the CASCADE / RESTART IDENTITY bits of a truncate.
	TruncateOptions uint8
}

// OldValue returns the value column i had before the change and whether it is
// known. For an UPDATE without an old tuple, identity columns did not change
// (the server sends a key tuple when they do), so the new value stands in.
func (c *Change) OldValue(i int) (Value, bool) {
	if c.Old.Kind == OldTuple || (c.Old.Kind == KeyTuple && c.Rel.Columns[i].Identity) {
		if i < len(c.Old.Values) && c.Old.Values[i].Kind != Absent && c.Old.Values[i].Kind != Unchanged {
			return c.Old.Values[i], true
		}
		return Value{}, false
	}
	if c.Op == OpUpdate && c.Old.Kind == NoTuple && c.Rel.Columns[i].Identity {
		v := c.New.Values[i]
		return v, v.Kind != Unchanged && v.Kind != Absent
	}
	return Value{}, false
}

// NewValue returns the value column i has after the change and whether it is
// known. An unchanged TOASTed value is known when the old row carries it.
func (c *Change) NewValue(i int) (Value, bool) {
	if c.New.Kind != NewTuple || i >= len(c.New.Values) {
		return Value{}, false
	}
	v := c.New.Values[i]
	switch v.Kind {
	case Unchanged:
		return c.OldValue(i)
	case Absent:
		return Value{}, false
	}
	return v, true
}

// Changed reports whether an UPDATE changed column i, and whether that could
// be decided. An unchanged TOASTed value is unchanged. Without the old value
// (REPLICA IDENTITY DEFAULT, non-identity column) the answer is unknown.
func (c *Change) Changed(i int) (changed, known bool) {
	if c.Op != OpUpdate {
		return false, false
	}
	nv := c.New.Values[i]
	if nv.Kind == Unchanged {
		return false, true
	}
	ov, ok := c.OldValue(i)
	if !ok {
		return false, false
	}
	if ov.Kind != nv.Kind {
		return true, true
	}
	return string(ov.Data) != string(nv.Data), true
}

// Begin opens a transaction.
type Begin struct {
	Xid        uint32
	FinalLSN   pglogrepl.LSN // LSN of the commit record
	CommitTime time.Time
}

// Commit closes a transaction.
type Commit struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN // start of the commit record
	EndLSN     pglogrepl.LSN // end of the commit record: what is acknowledged
	CommitTime time.Time
}

// Tx is what a transaction's changes are fed to: T is the concrete type
// itself (type Builder satisfies Tx[*Builder]), so that the parts of one
// transaction can only ever be merged with their own kind. Its methods are
// called from the goroutine that owns the replication connection and must
// not block on I/O: they run between two reads of the stream. A Change and
// its Values are only valid during Add.
type Tx[T any] interface {
	// Add evaluates one change, in stream order.
	Add(c *Change)
	// Part returns a new, empty T for another part of the same transaction
	// (a streamed subtransaction), evaluated as this one is: under the
	// same rules, whatever reloads happened since, and counted against
	// the same memory budget.
	Part() T
	// Merge absorbs later, a later part of the same transaction.
	Merge(later T)
	// Discard drops this part: its subtransaction was rolled back.
	Discard()
}

// Committed is a whole transaction handed on after its commit arrived.
type Committed[T any] struct {
	Commit
	// Tx holds the transaction's changes (the value Begin returned, with
	// its parts merged in).
	Tx T
	// Inexact reports that a subtransaction whose changes had already been
	// folded into the rest was rolled back: Tx then also holds changes that
	// never committed. Invalidating them is harmless (more, never less); an
	// invariant violation found in them may be a false alarm.
	Inexact bool
}
