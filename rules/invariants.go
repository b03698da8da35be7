package rules

import (
	"strconv"
	"strings"
	"unsafe"

	"github.com/cdcd/cdcd/replication"
)

// Invariants are checked per transaction, not per statement: a row's state
// before the transaction is compared with its state at commit. An
// application that changes the coefficients and then the version in two
// UPDATEs of one transaction keeps the invariant; one that changes a value
// and changes it back never broke it. Only the watched columns of rows an
// invariant's table saw updated are kept.

// rowState is one row's watched columns before the transaction and now.
type rowState struct {
	inv           *boundInvariant
	table         string
	before, after []watched // when_changed columns, then require_changed
	pk            []ColumnValue
	known         bool   // every watched value could be read
	skip          bool   // inserted or deleted in the transaction
	firstKey      string // the row's key when the transaction first saw it
	key           string // the row's key now: where rows holds it
	bytes         int64  // what it was last counted as holding
}

type watched struct {
	val     *string
	present bool // the relation has the column
}

// track records an UPDATE for the invariants of its table.
func (b *Builder) track(inv *boundInvariant, c *replication.Change, bind *binding) {
	if b.tx.gave(heldRows, inv.name) {
		b.uncheck(inv.name, b.table(c.Rel), UncheckedBudget, 1)
	} else {
		b.trackRow(inv, c)
	}

	// An invariant's sections are invalidated as soon as a watched column
	// changes: deleting keys for a change later completed by a version bump
	// is harmless, keeping them stale is not.
	if len(inv.sections) > 0 {
		for _, i := range inv.when {
			if i < 0 {
				continue
			}
			if ch, known := c.Changed(i); ch || !known {
				for _, s := range inv.sections {
					b.invalidate(s, inv.name, c, bind)
				}
				break
			}
		}
	}
}

// trackRow keeps the row's watched columns before the transaction and now.
func (b *Builder) trackRow(inv *boundInvariant, c *replication.Change) {
	oldKey := inv.name + "\x00" + rowKey(c, c.OldValue)
	newKey := inv.name + "\x00" + rowKey(c, c.NewValue)
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	st := b.rows[oldKey]
	if st == nil {
		st = &rowState{inv: inv, table: b.table(c.Rel), known: true, firstKey: oldKey}
		st.before = b.watch(st, inv, c.OldValue)
		b.rowOrder = append(b.rowOrder, st)
	} else {
		delete(b.rows, oldKey)
	}
	st.after = b.watch(st, inv, c.NewValue)
	st.pk = primaryKey(c)
	st.key = newKey
	b.rows[newKey] = st
	b.chargeRow(st)
	b.keepBudget()
}

// forget marks a row inserted or deleted in the transaction: it has no
// "before" or no "at commit" to compare.
func (b *Builder) forget(inv *boundInvariant, c *replication.Change, get func(int) (replication.Value, bool)) {
	if b.tx.gave(heldRows, inv.name) {
		return
	}
	key := inv.name + "\x00" + rowKey(c, get)
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	if st := b.rows[key]; st != nil {
		st.skip = true
	}
	st := &rowState{inv: inv, skip: true, firstKey: key, key: key}
	b.rowOrder = append(b.rowOrder, st)
	b.rows[key] = st
	b.chargeRow(st)
	b.keepBudget()
}

// dropRows frees the row states of an invariant the transaction gave up,
// and counts the rows it can no longer check.
func (b *Builder) dropRows(invariant string) {
	var freed int64
	kept := b.rowOrder[:0]
	for _, st := range b.rowOrder {
		if st.inv.name != invariant {
			kept = append(kept, st)
			continue
		}
		if b.rows[st.key] == st {
			delete(b.rows, st.key)
			if !st.skip && st.known {
				b.uncheck(invariant, st.table, UncheckedBudget, 1)
			}
		}
		freed += st.bytes
	}
	clear(b.rowOrder[len(kept):])
	b.rowOrder = kept
	b.chargeInvariant(invariant, -freed)
}

// uncheck counts n rows of table that an invariant could not be checked
// for.
func (b *Builder) uncheck(invariant, table, reason string, n int) {
	for i := range b.unchecked {
		if u := &b.unchecked[i]; u.Invariant == invariant && u.Table == table && u.Reason == reason {
			u.Rows += n
			return
		}
	}
	b.unchecked = append(b.unchecked, UncheckedInvariant{Invariant: invariant, Table: table, Reason: reason, Rows: n})
}

// table returns the qualified name of rel, the relation of the change
// being added, built once for a run of its changes.
func (b *Builder) table(rel *replication.Relation) string {
	if b.tableName == "" {
		b.tableName = rel.Table()
	}
	return b.tableName
}

func (b *Builder) watch(st *rowState, inv *boundInvariant, get func(int) (replication.Value, bool)) []watched {
	out := make([]watched, 0, len(inv.when)+len(inv.require))
	for _, idx := range [][]int{inv.when, inv.require} {
		for _, i := range idx {
			if i < 0 {
				out = append(out, watched{})
				continue
			}
			v, ok := get(i)
			if !ok {
				st.known = false
			}
			out = append(out, watched{val: text(v, ok), present: true})
		}
	}
	return out
}

// rowKey identifies a row by its primary key (or replica identity) values.
func rowKey(c *replication.Change, get func(int) (replication.Value, bool)) string {
	var sb strings.Builder
	idx := c.Rel.PrimaryKey
	if idx == nil {
		for i, col := range c.Rel.Columns {
			if col.Identity {
				idx = append(idx, i)
			}
		}
	}
	for _, i := range idx {
		v, ok := get(i)
		switch {
		case !ok:
			sb.WriteString("?")
		case v.Kind == replication.Null:
			sb.WriteString("N")
		default:
			sb.WriteString("t")
			sb.WriteString(strconv.Itoa(len(v.Data)))
			sb.WriteByte(':')
			sb.Write(v.Data)
		}
	}
	return sb.String()
}

func sameValue(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// violations compares each tracked row before and at commit.
func (b *Builder) finishInvariants() {
	for _, st := range b.rowOrder {
		if st.skip || !st.known {
			continue
		}
		inv := st.inv
		var changed []ColumnChange
		for k := range inv.when {
			o, n := st.before[k], st.after[k]
			if o.present && !sameValue(o.val, n.val) {
				changed = append(changed, ColumnChange{Column: inv.whenChanged[k], Old: o.val, New: n.val})
			}
		}
		if len(changed) == 0 {
			continue
		}
		required := make([]ColumnChange, 0, len(inv.require))
		bumped := false
		for k := range inv.require {
			o, n := st.before[len(inv.when)+k], st.after[len(inv.when)+k]
			if !o.present {
				continue
			}
			if !sameValue(o.val, n.val) {
				bumped = true
				break
			}
			required = append(required, ColumnChange{Column: inv.requireChanged[k], Old: o.val, New: n.val})
		}
		if bumped {
			continue
		}
		b.violations = append(b.violations, Violation{
			Invariant:  inv.name,
			Severity:   inv.severity,
			Message:    inv.message,
			Table:      st.table,
			PrimaryKey: st.pk,
			Changed:    changed,
			Required:   required,
			Xid:        b.xid,
		})
		b.charge(int64(unsafe.Sizeof(Violation{})) + int64(len(changed)+len(required))*int64(unsafe.Sizeof(ColumnChange{})))
	}
}

func text(v replication.Value, ok bool) *string {
	if !ok || v.Kind == replication.Null {
		return nil
	}
	s := string(v.Data)
	return &s
}

// primaryKey returns the row's primary key, or its identity columns when the
// catalog gave no primary key.
func primaryKey(c *replication.Change) []ColumnValue {
	idx := c.Rel.PrimaryKey
	if idx == nil && c.Rel.ReplicaIdentity != replication.IdentityFull {
		for i, col := range c.Rel.Columns {
			if col.Identity {
				idx = append(idx, i)
			}
		}
	}
	out := make([]ColumnValue, 0, len(idx))
	for _, i := range idx {
		v, ok := c.NewValue(i)
		if !ok {
			v, ok = c.OldValue(i)
		}
		out = append(out, ColumnValue{Column: c.Rel.Columns[i].Name, Value: text(v, ok)})
	}
	return out
}
