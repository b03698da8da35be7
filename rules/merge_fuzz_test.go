package rules_test

import (
	"fmt"
	"path"
	"testing"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// FuzzPartsWithinBudget: a streamed transaction cut into parts, some of
// them aborted, under a small byte budget and key limit, deletes at least
// what the committed changes make in one part without limits: a key
// exactly or by a pattern of its section, a revision exactly or by a
// pattern. What the parts count as held is what they hold.
func FuzzPartsWithinBudget(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint16(2000), uint8(3))
	f.Add([]byte{0x10, 0x21, 0x32, 0x43, 0x84, 0x95, 0xa6, 0xb7, 0xc8, 0xd9, 0xea, 0xfb}, uint16(500), uint8(1))
	f.Add([]byte{0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47}, uint16(9000), uint8(50))
	f.Fuzz(func(t *testing.T, ops []byte, extra uint16, maxKeys uint8) {
		if len(ops) > 300 {
			return
		}
		base, _ := rules.Budget(compile(t, evalRules).Begin(begin))
		limited := compile(t, evalRules, rules.WithMaxTxBytes(base+int64(extra)), rules.WithMaxTxKeys(int(maxKeys)))
		first := limited.Begin(begin)
		parts := []*rules.Builder{first}
		changes := [][]*replication.Change{nil} // by part
		aborted := map[int]bool{}
		for _, op := range ops {
			// The low nibble picks the row, the high one what happens.
			row, what := int(op&0x0f), op>>4
			id := fmt.Sprint(row)
			var c *replication.Change
			switch what {
			case 0, 1, 2:
				c = ins(runsF, id, fmt.Sprint(row*int(what+1)), "p")
			case 3:
				c = del(runsF, id, id, "p")
			case 4:
				c = truncate(runsF)
			case 5, 6:
				c = upd(fnF, []string{id, "0.1", "0.2", "3", "n"}, id, "0.5", "0.2", fmt.Sprint(3+int(what)-5), "n")
			case 7:
				c = ins(events, id, "k"+id)
			case 8, 9:
				parts = append(parts, first.Part()) // a new subtransaction
				changes = append(changes, nil)
				continue
			case 10:
				if len(parts) > 1 {
					aborted[len(parts)-1] = true // its changes never happened
				}
				continue
			default:
				c = upd(tasks, []string{id, "a", "b", "n"}, id, "t", "s", "n")
			}
			parts[len(parts)-1].Add(c)
			changes[len(parts)-1] = append(changes[len(parts)-1], c)
			if err := rules.CheckAccounting(first); err != nil {
				t.Fatal(err)
			}
		}
		for i, p := range parts[1:] {
			if !aborted[i+1] {
				first.Merge(p)
			}
		}
		if err := rules.CheckAccounting(first); err != nil {
			t.Fatal(err)
		}
		whole := compile(t, evalRules).Begin(begin)
		for i, cs := range changes {
			for _, c := range cs {
				if !aborted[i] {
					whole.Add(c)
				}
			}
		}
		got, want := first.Plan(commit), whole.Plan(commit)
		for _, k := range want.Keys {
			if !covers(got, k.Section, k.Key) {
				t.Errorf("key %s of %s lost: keys %q, patterns %q", k.Key, k.Section, keyList(got), patternList(got))
			}
		}
		for _, r := range want.Revisions {
			if !coversRevision(got, r) {
				t.Errorf("revision %+v lost: %q", r, revisionList(got))
			}
		}
	})
}

func coversRevision(p *rules.Plan, r rules.Revision) bool {
	for _, g := range p.Revisions {
		if g.Section != r.Section {
			continue
		}
		if g.Key == r.Key && g.IsPattern == r.IsPattern {
			return true
		}
		if ok, _ := path.Match(g.Key, r.Key); ok && g.IsPattern {
			return true
		}
	}
	return false
}
