package rules

import "unsafe"

// A transaction's memory is bounded by bytes, over all its parts (a
// streamed transaction arrives in one part per subtransaction, and all of
// them are held until it commits). Each Builder counts what it holds, about
// as the heap holds it; past the budget the transaction gives up precision,
// never an invalidation: the section holding the most bytes of exact keys
// (or revision keys) escalates to its patterns in every part, then the
// next; when only invariant rows are left, the invariant holding the most
// stops being checked, and the plan says for how many rows.

// txState is what the parts of one transaction share. The parts are used by
// one goroutine at a time (the replication receive loop, then the applier),
// so it needs no lock.
type txState struct {
	limit, used int64
	// parts are the live Builders of the transaction, so that an
	// escalation frees what every part holds; a merged part's is nil.
	parts  []*Builder
	secs   smallSet[sectionBytes, string]   // by section name, over all parts
	invs   smallSet[invariantBytes, string] // by invariant name, over all parts
	gaveUp map[given]bool                   // for the whole transaction

	buf  []byte // where keys are rendered
	vals [][]byte
}

// given is what a transaction gave up: a section's exact keys or revision
// keys (heldKeys, heldRevisions), an invariant's rows (heldRows).
type given struct {
	what int
	name string
}

// gave reports whether the transaction gave up what of name.
func (tx *txState) gave(what int, name string) bool { return tx.gaveUp[given{what, name}] }

func (tx *txState) giveUpOn(what int, name string) {
	if tx.gaveUp == nil {
		tx.gaveUp = make(map[given]bool)
	}
	tx.gaveUp[given{what, name}] = true
}

type sectionBytes struct {
	name       string
	keys, revs int64 // bytes of exact keys, of exact revision keys
}

func (s sectionBytes) id() string { return s.name }

type invariantBytes struct {
	name  string
	bytes int64 // of row states
}

func (s invariantBytes) id() string { return s.name }

// What one item costs beyond its text: the item in its slice (slices grow
// by doubling), its entry in a set's index or in a map, pointers to it.
const (
	keyCost      = int64(unsafe.Sizeof(Key{}))*3/2 + 48
	patternCost  = int64(unsafe.Sizeof(Pattern{}))*3/2 + 48
	revisionCost = int64(unsafe.Sizeof(Revision{}))*3/2 + 40
	rowCost      = int64(unsafe.Sizeof(rowState{})) + 64 // + its map entry and place in rowOrder
	valueCost    = int64(unsafe.Sizeof(watched{})) + 16  // + the string it points to
	columnCost   = int64(unsafe.Sizeof(MissingColumn{}))
	partCost     = int64(unsafe.Sizeof(Builder{})) + 8
)

// charge counts n more bytes (less, when negative) held by b.
func (b *Builder) charge(n int64) {
	b.held += n
	b.tx.used += n
}

// chargeSection counts n more bytes of exact keys (or revision keys) of the
// section st.
func (b *Builder) chargeSection(st *sectionState, n int64, revision bool) {
	b.charge(n)
	t := &b.tx.secs.items[st.total]
	if revision {
		st.revBytes += n
		t.revs += n
	} else {
		st.keyBytes += n
		t.keys += n
	}
}

// chargeRow counts the change in a row state's size since it was last
// counted.
func (b *Builder) chargeRow(st *rowState) {
	n := st.size()
	b.chargeInvariant(st.inv.name, n-st.bytes)
	st.bytes = n
}

func (b *Builder) chargeInvariant(name string, n int64) {
	b.charge(n)
	i := b.tx.invs.find(name)
	if i < 0 {
		i = b.tx.invs.insert(invariantBytes{name: name})
	}
	b.tx.invs.items[i].bytes += n
}

// size is about the bytes a row state holds.
func (st *rowState) size() int64 {
	n := rowCost + int64(len(st.firstKey)+len(st.table))
	if st.key != st.firstKey {
		n += int64(len(st.key))
	}
	for _, ws := range [2][]watched{st.before, st.after} {
		for _, w := range ws {
			n += valueCost
			if w.val != nil {
				n += int64(len(*w.val))
			}
		}
	}
	for _, c := range st.pk {
		n += int64(unsafe.Sizeof(c)) + 16
		if c.Value != nil {
			n += int64(len(*c.Value))
		}
	}
	return n
}

// keepBudget gives up precision until the transaction is within its budget
// again: first exact keys and revision keys, by section, the largest first;
// then invariants, the largest first. Each is given up once; what is left
// (the parts themselves, patterns, literal keys) cannot be.
func (b *Builder) keepBudget() {
	tx := b.tx
	for tx.used > tx.limit {
		switch name, kind := tx.largest(); kind {
		case heldKeys:
			tx.escalateAll(name, "", false)
		case heldRevisions:
			tx.escalateAll(name, "", true)
		case heldRows:
			tx.giveUp(name)
		default:
			return
		}
	}
}

// What the budget can give up.
const (
	heldNothing = iota
	heldKeys
	heldRevisions
	heldRows
)

// largest returns what the budget gives up next: the section holding the
// most bytes of exact keys or revision keys, or when none holds any, the
// invariant holding the most bytes of row states.
func (tx *txState) largest() (name string, kind int) {
	var most int64
	for i := range tx.secs.items {
		s := &tx.secs.items[i]
		if s.keys > most && !tx.gave(heldKeys, s.name) {
			name, most, kind = s.name, s.keys, heldKeys
		}
		if s.revs > most && !tx.gave(heldRevisions, s.name) {
			name, most, kind = s.name, s.revs, heldRevisions
		}
	}
	if kind != heldNothing {
		return name, kind
	}
	for i := range tx.invs.items {
		if s := &tx.invs.items[i]; s.bytes > most && !tx.gave(heldRows, s.name) {
			name, most, kind = s.name, s.bytes, heldRows
		}
	}
	return name, kind
}

// escalateAll escalates a section's exact keys (or revision keys) to its
// patterns in every part of the transaction, and in parts still to come.
// Each part gets the patterns itself: a part dropped with its aborted
// subtransaction must not take with it the pattern that stands for another
// part's keys. by is the rule that reached a limit, or empty when the
// budget chose the section (see escalate).
func (tx *txState) escalateAll(section, by string, revision bool) {
	if revision {
		tx.giveUpOn(heldRevisions, section)
	} else {
		tx.giveUpOn(heldKeys, section)
	}
	for _, p := range tx.parts {
		if p == nil {
			continue
		}
		if i := p.touched.find(section); i >= 0 {
			st := &p.touched.items[i]
			if revision && !st.revEscalated {
				p.escalateRevisions(st, by != "")
			} else if !revision && !st.escalated {
				p.escalate(st, by)
			}
		}
	}
}

// giveUp stops checking an invariant in this transaction and frees the row
// states every part holds for it; each part counts the rows it could not
// check.
func (tx *txState) giveUp(invariant string) {
	tx.giveUpOn(heldRows, invariant)
	for _, p := range tx.parts {
		if p != nil {
			p.dropRows(invariant)
		}
	}
}
