package rules

import (
	"slices"
)

// Merge absorbs later, a later part of the same transaction: its keys,
// patterns and revisions are added, and a row's state before the
// transaction stays the earlier part's while its state at commit becomes
// the later part's. later must not be used after.
//
// A part from Part shares b's rules. One begun under other rules (a reload
// between parts) is merged by section name; a section b's rules lack, or
// define differently, keeps the part's own definition, so that what the
// part collected is deleted as it would have been: nothing is dropped.
func (b *Builder) Merge(later *Builder) {
	l := later
	if l == nil || l == b {
		return
	}
	b.changes += l.changes
	l.release()
	// Sections first, in the part's touch order: its messages follow b's.
	// into maps the part's sections to b's; b's positions never change.
	into := make([]int, len(l.touched.items))
	for i := range l.touched.items {
		into[i] = b.touchFrom(l.touched.items[i].sec)
	}
	for _, p := range l.pats.items {
		if b.pats.add(p) {
			b.charge(patternCost)
		}
	}
	// A section the part escalated is large in this transaction: b's
	// share of it goes too.
	for i := range l.touched.items {
		ls, st := &l.touched.items[i], &b.touched.items[into[i]]
		if ls.escalated && !st.escalated {
			b.escalate(st, "merge")
		}
		if ls.revEscalated && !st.revEscalated {
			b.escalateRevisions(st, true)
		}
	}
	// Keys and revisions come in runs of one section: look each run's up once.
	last := -1
	state := func(name string) *sectionState {
		if last < 0 || l.touched.items[last].sec.name != name {
			last = l.touched.find(name)
		}
		return &b.touched.items[into[last]]
	}
	for _, k := range l.keys.items {
		b.add(k.Key, state(k.Section), k.Rule, k.From, false)
	}
	for _, r := range l.revs.items {
		if r.IsPattern {
			b.addRevisionPattern(r.Template, state(r.Section))
		} else {
			b.addRevision(r.Key, state(r.Section), "merge")
		}
	}
	for _, m := range l.missing {
		if !slices.Contains(b.missing, m) {
			b.missing = append(b.missing, m)
			b.charge(columnCost)
		}
	}
	for _, u := range l.unchecked {
		b.uncheck(u.Invariant, u.Table, u.Reason, u.Rows)
	}
	b.mergeRows(l)
}

// Discard drops b, a part of a rolled-back subtransaction: what it holds
// leaves the transaction's budget, and the transaction forgets it.
func (b *Builder) Discard() {
	if b.tx.parts[b.part] == b {
		b.release()
	}
}

// release takes what b holds off its transaction's budget, and b out of its
// parts: it is being merged into another part, which counts what it takes.
func (b *Builder) release() {
	tx := b.tx
	for i := range b.touched.items {
		st := &b.touched.items[i]
		t := &tx.secs.items[st.total]
		t.keys -= st.keyBytes
		t.revs -= st.revBytes
	}
	for _, st := range b.rowOrder {
		b.chargeInvariant(st.inv.name, -st.bytes) // the row is counted again where it goes
		st.bytes = 0
	}
	tx.used -= b.held
	b.held = 0
	if tx.parts[b.part] == b {
		tx.parts[b.part] = nil
	}
}

// touchFrom touches b's section of the same name as s, a section of another
// part, and returns its position in b.touched. When b's rules lack it, s
// itself is used; when they define it differently, s is remembered so that
// an escalation also deletes s's patterns, which cover the keys the part
// rendered from s's templates.
func (b *Builder) touchFrom(s *section) int {
	own := b.rules.byName[s.name]
	if own == nil {
		own = s
	}
	i := b.touchAt(own)
	st := &b.touched.items[i]
	if others := b.others[s.name]; s != st.sec && !sameSection(s, st.sec) && !slices.ContainsFunc(others, func(o *section) bool { return sameSection(o, s) }) {
		if b.others == nil {
			b.others = make(map[string][]*section)
		}
		b.others[s.name] = append(others, s)
	}
	return i
}

// sameSection reports whether two sections, from two compilations, name the
// same keys.
func sameSection(a, b *section) bool {
	if a.name != b.name || len(a.keys) != len(b.keys) || (a.revision == nil) != (b.revision == nil) {
		return false
	}
	for i := range a.keys {
		if a.keys[i].Text != b.keys[i].Text {
			return false
		}
	}
	return a.revision == nil || a.revision.Text == b.revision.Text
}

// mergeRows carries the invariant row states of l over into b.
func (b *Builder) mergeRows(l *Builder) {
	if len(l.rowOrder) == 0 {
		return
	}
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	for _, st := range l.rowOrder {
		if l.rows[st.key] != st {
			continue // replaced: the row was inserted or deleted after
		}
		if b.tx.gave(heldRows, st.inv.name) {
			if !st.skip && st.known {
				b.uncheck(st.inv.name, st.table, UncheckedBudget, 1)
			}
			continue
		}
		prev := b.rows[st.firstKey]
		if prev == nil {
			b.rows[st.key] = st
			b.rowOrder = append(b.rowOrder, st)
			b.chargeRow(st)
			b.keepBudget()
			continue
		}
		delete(b.rows, st.firstKey)
		if prev.known && !sameInvariant(prev.inv, st.inv) {
			// The invariant changed between the parts: before and at commit
			// watch different columns, and cannot be compared.
			prev.known = false
			b.uncheck(prev.inv.name, prev.table, UncheckedRulesChanged, 1)
		}
		prev.after = st.after
		if st.pk != nil {
			prev.pk = st.pk
		}
		prev.known = prev.known && st.known
		prev.skip = prev.skip || st.skip
		prev.key = st.key
		b.rows[st.key] = prev
		b.chargeRow(prev)
		b.keepBudget()
	}
}

func sameInvariant(a, b *boundInvariant) bool {
	return a.invariant == b.invariant ||
		slices.Equal(a.whenChanged, b.whenChanged) && slices.Equal(a.requireChanged, b.requireChanged)
}
