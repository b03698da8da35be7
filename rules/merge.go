package rules

import (
	"slices"

	"github.com/cdcd/cdcd/replication"
)

var _ replication.Merger = (*Builder)(nil)

// Merge absorbs later, the plan of a later part of the same transaction
// (a streamed subtransaction): its keys, patterns and revisions are added,
// and a row's state before the transaction stays the earlier part's while
// its state at commit becomes the later part's.
func (b *Builder) Merge(later replication.Tx) {
	l, ok := later.(*Builder)
	if !ok || l == b {
		return
	}
	b.changes += l.changes
	byName := make(map[string]*section, len(b.rules.sections))
	for _, s := range b.rules.sections {
		byName[s.name] = s
	}
	for i := range l.touched.items {
		ls := &l.touched.items[i]
		st := b.touch(byName[ls.sec.name])
		if ls.escalated && !st.escalated {
			b.escalate(st, "merge")
		}
	}
	for _, k := range l.keys.items {
		b.add(k.Key, b.touch(byName[k.Section]), k.Rule, k.From, false)
	}
	for _, p := range l.pats.items {
		b.pats.add(p)
	}
	for _, r := range l.revs.items {
		if !b.revs.has(r.id()) {
			b.insertRevision(r)
			if !r.IsPattern {
				b.touch(byName[r.Section]).revs++
			}
		}
	}
	for _, m := range l.missing {
		if !slices.Contains(b.missing, m) {
			b.missing = append(b.missing, m)
		}
	}
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	for key, st := range l.rows {
		prev := b.rows[st.firstKey]
		if prev == nil {
			b.rows[key] = st
			b.rowOrder = append(b.rowOrder, st)
			continue
		}
		delete(b.rows, st.firstKey)
		prev.after = st.after
		if st.pk != nil {
			prev.pk = st.pk
		}
		prev.known = prev.known && st.known
		prev.skip = prev.skip || st.skip
		b.rows[key] = prev
	}
}
