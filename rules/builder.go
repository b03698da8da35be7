package rules

import (
	"slices"
	"unsafe"

	"github.com/cdcd/cdcd/replication"
)

// Builder accumulates one transaction's plan as its changes arrive. It keeps
// keys, not rows. It implements replication.Tx. Not safe for concurrent use.
type Builder struct {
	rules *Rules
	tx    *txState // shared with the transaction's other parts
	xid   uint32
	part  int        // position in tx.parts
	held  int64      // bytes counted in tx.used
	first *firstPart // the first part's inline storage; nil in the others

	lastRel   *replication.Relation
	lastBind  *binding
	tableName string // of lastRel, once needed

	touched    smallSet[sectionState, string] // sections invalidated, in first-touch order
	keys       smallSet[Key, keyID]
	pats       smallSet[Pattern, patternID]
	revs       smallSet[Revision, revisionID]
	violations []Violation
	missing    []MissingColumn
	rows       map[string]*rowState // invariant + row key -> state
	rowOrder   []*rowState
	unchecked  []UncheckedInvariant
	changes    int
	// others are definitions of b's sections in other rules, from parts
	// merged in after a reload, when they name other keys.
	others map[string][]*section
}

// firstPart is the first part of a transaction, allocated at once with what
// the transaction shares and inline storage for the first few of each,
// enough for most transactions: a slice starts on them when it gets its
// first element. Later parts (Part) are plain Builders.
type firstPart struct {
	Builder
	tx txState

	plan     Plan
	buf      [96]byte
	vals     [3][]byte
	keys     [2]Key
	revs     [1]Revision
	touched  [2]sectionState
	msgs     [1]Message
	parts    [1]*Builder
	sections [2]sectionBytes
}

// sectionState is what a Builder holds of one section it invalidated.
type sectionState struct {
	sec                     *section
	keyBytes, revBytes      int64 // what its exact keys and revision keys cost
	keys, revs              int32 // how many
	total                   int32 // position in tx.secs
	escalated, revEscalated bool  // past a limit: patterns instead
}

func (s sectionState) id() string { return s.sec.name }

var _ replication.Tx[*Builder] = (*Builder)(nil)

// Begin starts the plan of a transaction under these rules. All of the
// transaction is evaluated under the rules it began with.
func (rs *Rules) Begin(b replication.Begin) *Builder {
	f := &firstPart{}
	f.Builder = Builder{rules: rs, tx: &f.tx, xid: b.Xid, first: f}
	f.tx = txState{limit: rs.opts.maxTxBytes, buf: f.buf[:0], vals: f.vals[:0], parts: f.parts[:0]}
	f.tx.secs.items = f.sections[:0]
	f.tx.parts = append(f.tx.parts, &f.Builder)
	f.charge(int64(unsafe.Sizeof(firstPart{})))
	return &f.Builder
}

// Part returns a new, empty Builder for another part of the same
// transaction (a streamed subtransaction), evaluated under the same rules
// whatever reloads happen meanwhile, and within the same memory budget.
// Merge folds it back in.
func (b *Builder) Part() *Builder {
	p := &Builder{rules: b.rules, tx: b.tx, xid: b.xid, part: len(b.tx.parts)}
	b.tx.parts = append(b.tx.parts, p)
	p.charge(partCost)
	return p
}

// Add evaluates one change.
func (b *Builder) Add(c *replication.Change) {
	b.changes++
	bind := b.lastBind
	if c.Rel != b.lastRel {
		bind = b.rules.bind(c.Rel)
		b.lastRel, b.lastBind, b.tableName = c.Rel, bind, ""
		for _, m := range bind.missing {
			if !slices.Contains(b.missing, m) {
				b.missing = append(b.missing, m)
				b.charge(columnCost)
			}
		}
	}
	if len(bind.rules) == 0 && len(bind.invariants) == 0 {
		return
	}
	for i := range bind.rules {
		r := &bind.rules[i]
		if !r.ops[c.Op] || !r.matches(c) {
			continue
		}
		for _, s := range r.sections {
			b.invalidate(s, r.name, c, bind)
		}
	}
	for i := range bind.invariants {
		inv := &bind.invariants[i]
		switch c.Op {
		case replication.OpUpdate:
			b.track(inv, c, bind)
		case replication.OpInsert:
			b.forget(inv, c, c.NewValue)
		case replication.OpDelete:
			b.forget(inv, c, c.OldValue)
		case replication.OpTruncate:
			for _, st := range b.rowOrder {
				if st.inv == inv {
					st.skip = true
				}
			}
		}
	}
}

// matches applies the column filter: an UPDATE matches when a listed column
// changed, or when that cannot be told (no old row) — when in doubt,
// invalidate.
func (r *boundRule) matches(c *replication.Change) bool {
	if c.Op != replication.OpUpdate || len(r.columns) == 0 {
		return true
	}
	for _, i := range r.columns {
		if i < 0 {
			return true
		}
		if changed, known := c.Changed(i); changed || !known {
			return true
		}
	}
	return false
}

// touch returns the state of section s, which the transaction invalidates.
// The pointer is valid until the next touch.
func (b *Builder) touch(s *section) *sectionState {
	return &b.touched.items[b.touchAt(s)]
}

// touchAt touches s and returns the position of its state, which never
// changes.
func (b *Builder) touchAt(s *section) int {
	i := b.touched.find(s.name)
	if i < 0 {
		if b.touched.items == nil && b.first != nil {
			b.touched.items = b.first.touched[:0]
		}
		total := b.tx.secs.find(s.name)
		if total < 0 {
			total = b.tx.secs.insert(sectionBytes{name: s.name})
		}
		i = b.touched.insert(sectionState{sec: s, total: int32(total)})
	}
	return i
}

func (b *Builder) invalidate(s *section, by string, c *replication.Change, bind *binding) {
	st := b.touch(s)
	for _, t := range s.keys {
		b.resolve(t, bind.templates[t], st, by, c, false)
	}
	if s.revision != nil {
		b.resolve(s.revision, bind.templates[s.revision], st, by, c, true)
	}
}

// resolve turns one template into exact keys from the rows the change
// carries, or into the template's pattern when a value is unknown.
func (b *Builder) resolve(t *Template, cols []int, s *sectionState, by string, c *replication.Change, revision bool) {
	if t.IsLiteral() {
		b.add(t.Literal(), s, by, FromLiteral, revision)
		return
	}
	if c.Op == replication.OpTruncate {
		b.pattern(t, s, by, ReasonTruncate, revision)
		return
	}
	for _, i := range cols {
		if i < 0 {
			b.pattern(t, s, by, ReasonMissingColumn, revision)
			return
		}
	}
	useNew := c.Op == replication.OpInsert || c.Op == replication.OpUpdate
	useOld := c.Op == replication.OpDelete || c.Op == replication.OpUpdate
	var newKey string
	if useNew {
		key, ok := b.render(t, cols, c.NewValue)
		if !ok {
			b.pattern(t, s, by, ReasonValueUnknown, revision)
			return
		}
		newKey = key
		b.add(key, s, by, FromNew, revision)
	}
	if useOld {
		if useNew && b.unchanged(cols, c) {
			return // the old key is the new key
		}
		key, ok := b.render(t, cols, c.OldValue)
		if !ok {
			b.pattern(t, s, by, ReasonOldRowUnknown, revision)
			return
		}
		if key != newKey {
			b.add(key, s, by, FromOld, revision)
		}
	}
}

// unchanged reports whether every column is known not to have changed.
func (b *Builder) unchanged(cols []int, c *replication.Change) bool {
	for _, i := range cols {
		if changed, known := c.Changed(i); changed || !known {
			return false
		}
	}
	return true
}

// render renders t with values from get, into a fresh string.
func (b *Builder) render(t *Template, cols []int, get func(int) (replication.Value, bool)) (string, bool) {
	tx := b.tx
	tx.vals = tx.vals[:0]
	for _, i := range cols {
		v, ok := get(i)
		if !ok {
			return "", false
		}
		// NULL renders as the empty string.
		tx.vals = append(tx.vals, v.Data)
	}
	tx.buf = t.Render(tx.buf[:0], tx.vals)
	return string(tx.buf), true
}

// Plan finishes the transaction's plan. The Builder must not be used after.
func (b *Builder) Plan(c replication.Commit) *Plan {
	b.finishInvariants()
	var p *Plan
	if b.first != nil {
		p = &b.first.plan
	} else {
		p = new(Plan) // a part's plan: parts are meant to be merged first
	}
	*p = Plan{
		Xid:            b.xid,
		CommitLSN:      c.CommitLSN,
		EndLSN:         c.EndLSN,
		CommitTime:     c.CommitTime,
		Changes:        b.changes,
		Keys:           b.keys.items,
		Patterns:       b.pats.items,
		Revisions:      b.revs.items,
		Violations:     b.violations,
		MissingColumns: b.missing,
		Unchecked:      b.unchecked,
	}
	if len(p.Violations) > 0 {
		lsn := c.CommitLSN.String()
		for i := range p.Violations {
			p.Violations[i].LSN = lsn
			p.Violations[i].CommitTime = c.CommitTime
		}
	}
	var payloads []byte
	for i := range b.touched.items {
		s := b.touched.items[i].sec
		if s.channel == "" {
			continue
		}
		if payloads == nil {
			payloads = make([]byte, 0, b.payloadSize())
			if b.first != nil {
				p.Messages = b.first.msgs[:0]
			}
		}
		start := len(payloads)
		payloads = appendChannelMessage(payloads, s.name, p, c)
		p.Messages = append(p.Messages, Message{Channel: s.channel, Section: s.name, Payload: payloads[start:len(payloads):len(payloads)]})
	}
	return p
}

// payloadSize is about the size of the transaction's channel messages, so
// that they are written into one buffer.
func (b *Builder) payloadSize() int {
	n := 0
	for i := range b.touched.items {
		if s := b.touched.items[i].sec; s.channel != "" {
			n += 100 + len(s.name)
		}
	}
	for i := range b.keys.items {
		n += len(b.keys.items[i].Key) + 3
	}
	for i := range b.pats.items {
		n += len(b.pats.items[i].Pattern) + 16
	}
	return n
}
