package rules

import "fmt"

// Budget returns the bytes the transaction of b holds and its budget.
func Budget(b *Builder) (used, limit int64) { return b.tx.used, b.tx.limit }

// Escalated reports whether b's transaction escalated a section's keys.
func Escalated(b *Builder, section string) bool { return b.tx.gave(heldKeys, section) }

// Exhausted reports whether b's transaction has nothing left to give up.
func Exhausted(b *Builder) bool {
	_, kind := b.tx.largest()
	return kind == heldNothing
}

// CheckAccounting recounts what the live parts of b's transaction hold and
// compares it with what they counted as they went.
func CheckAccounting(b *Builder) error {
	tx := b.tx
	var held int64
	secs := map[string][2]int64{}
	invs := map[string]int64{}
	for _, p := range tx.parts {
		if p == nil {
			continue
		}
		held += p.held
		for i := range p.touched.items {
			st := &p.touched.items[i]
			var keys, revs int64
			nkeys, nrevs := 0, 0
			for _, k := range p.keys.items {
				if k.Section == st.sec.name {
					nkeys++
					if k.From != FromLiteral {
						keys += int64(len(k.Key)) + keyCost
					}
				}
			}
			for _, r := range p.revs.items {
				if r.Section == st.sec.name && !r.IsPattern {
					nrevs++
					if !p.literalRevision(st, r.Key) {
						revs += int64(len(r.Key)) + revisionCost
					}
				}
			}
			if keys != st.keyBytes || revs != st.revBytes || nkeys != int(st.keys) || nrevs != int(st.revs) {
				return fmt.Errorf("section %s: counted %d keys, %d bytes, %d revisions, %d bytes; holds %d, %d, %d, %d",
					st.sec.name, st.keys, st.keyBytes, st.revs, st.revBytes, nkeys, keys, nrevs, revs)
			}
			t := secs[st.sec.name]
			secs[st.sec.name] = [2]int64{t[0] + keys, t[1] + revs}
		}
		for _, st := range p.rowOrder {
			if st.bytes != st.size() {
				return fmt.Errorf("row %q: counted %d bytes, holds %d", st.key, st.bytes, st.size())
			}
			invs[st.inv.name] += st.bytes
		}
	}
	if held != tx.used {
		return fmt.Errorf("the parts hold %d bytes, the transaction counted %d", held, tx.used)
	}
	for _, s := range tx.secs.items {
		if t := secs[s.name]; t[0] != s.keys || t[1] != s.revs {
			return fmt.Errorf("section %s: the transaction counted %d, %d bytes; the parts hold %d, %d", s.name, s.keys, s.revs, t[0], t[1])
		}
	}
	for _, s := range tx.invs.items {
		if invs[s.name] != s.bytes {
			return fmt.Errorf("invariant %s: the transaction counted %d bytes; the parts hold %d", s.name, s.bytes, invs[s.name])
		}
	}
	return nil
}
