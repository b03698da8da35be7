package replication

import (
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/jackc/pglogrepl"
)

// fakeTx records the rows it was fed. gen stands for the rules version a
// transaction was begun under.
type fakeTx struct {
	gen  int
	rows []string
}

func (f *fakeTx) Add(c *Change)       { f.rows = append(f.rows, string(c.New.Values[0].Data)) }
func (f *fakeTx) Part() *fakeTx       { return &fakeTx{gen: f.gen} }
func (f *fakeTx) Merge(later *fakeTx) { f.rows = append(f.rows, later.rows...) }
func (f *fakeTx) Discard()            { f.rows = append(f.rows[:0], "discarded") }

var fakeRel = &Relation{ID: 1, Namespace: "public", Name: "t", Columns: []Column{{Name: "v"}}}

func row(v string) *Change {
	return &Change{Op: OpInsert, Rel: fakeRel, New: Tuple{Kind: NewTuple, Values: []Value{{Kind: Text, Data: []byte(v)}}}}
}

// script drives an assembler and collects what it commits.
type script struct {
	t    *testing.T
	gen  int
	asm  *assembler[*fakeTx]
	done []Committed[*fakeTx]
}

func newScript(t *testing.T) *script {
	s := &script{t: t}
	s.asm = newAssembler(func(Begin) *fakeTx { return &fakeTx{gen: s.gen} })
	return s
}

func (s *script) feed(ev event) {
	s.t.Helper()
	c, done, err := s.asm.feed(&ev)
	if err != nil {
		s.t.Fatalf("feed: %v", err)
	}
	if done {
		s.done = append(s.done, c)
	}
}

func (s *script) begin(xid uint32)           { s.feed(event{begin: &Begin{Xid: xid}}) }
func (s *script) change(v string)            { s.feed(event{change: row(v)}) }
func (s *script) commit(end uint64)          { s.feed(event{commit: &Commit{EndLSN: pglogrepl.LSN(end)}}) }
func (s *script) start(xid uint32)           { s.feed(event{streamStart: &streamStart{Xid: xid}}) }
func (s *script) stop()                      { s.feed(event{streamStop: true}) }
func (s *script) in(subxid uint32, v string) { s.feed(event{xid: subxid, change: row(v)}) }
func (s *script) abort(xid, subxid uint32) {
	s.feed(event{streamAbort: &streamAbort{Xid: xid, SubXid: subxid}})
}
func (s *script) streamCommit(xid uint32)  { s.feed(event{streamCommit: &Commit{Xid: xid}}) }
func (s *script) last() Committed[*fakeTx] { return s.done[len(s.done)-1] }
func (s *script) rows() []string           { return s.last().Tx.rows }
func (s *script) wantRows(want ...string)  { s.t.Helper(); s.want(s.rows(), want) }
func (s *script) want(got, want []string)  { s.t.Helper(); wantEqual(s.t, got, want) }
func wantEqual(t *testing.T, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("rows %q, want %q", got, want)
	}
}

func TestAssemblePlainTransaction(t *testing.T) {
	s := newScript(t)
	if s.asm.open() {
		t.Fatal("a new assembler has a transaction open")
	}
	s.begin(7)
	if !s.asm.open() {
		t.Fatal("no transaction open after Begin")
	}
	s.change("a")
	s.feed(event{truncate: []*Change{row("t1"), row("t2")}})
	s.commit(100)
	if s.asm.open() {
		t.Fatal("transaction still open after Commit")
	}
	c := s.last()
	if c.Xid != 7 || c.EndLSN != 100 || c.Inexact {
		t.Fatalf("committed %+v", c.Commit)
	}
	s.wantRows("a", "t1", "t2")
}

func TestAssembleRejectsMisplacedMessages(t *testing.T) {
	for name, evs := range map[string][]event{
		"commit outside":   {{commit: &Commit{}}},
		"change outside":   {{change: row("a")}},
		"truncate outside": {{truncate: []*Change{row("a")}}},
		"begin inside":     {{begin: &Begin{Xid: 1}}, {begin: &Begin{Xid: 2}}},
	} {
		t.Run(name, func(t *testing.T) {
			a := newAssembler(func(Begin) *fakeTx { return &fakeTx{} })
			var err error
			for i := range evs {
				if _, _, err = a.feed(&evs[i]); err != nil {
					break
				}
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestAssembleStreamedSubtransactionAbort(t *testing.T) {
	s := newScript(t)
	s.start(10)
	s.in(10, "a")
	s.in(11, "b") // savepoint, rolled back below
	s.in(10, "c")
	s.stop()
	s.start(10)
	s.in(12, "d")
	s.in(11, "b2") // more of 11 after 12: a second part of 11
	s.stop()
	s.abort(10, 11)
	if !s.asm.open() {
		t.Fatal("streamed transaction not open before its commit")
	}
	s.streamCommit(10)
	s.wantRows("a", "c", "d")
	if s.last().Inexact {
		t.Fatal("an abort of parts kept apart made the transaction inexact")
	}
	if s.asm.open() {
		t.Fatal("streamed transaction still open after its commit")
	}
}

func TestAssembleInterleavedStreams(t *testing.T) {
	s := newScript(t)
	s.start(1)
	s.in(1, "1a")
	s.stop()
	s.start(2)
	s.in(2, "2a")
	s.stop()
	// An ordinary transaction commits between the blocks.
	s.begin(3)
	s.change("3a")
	s.commit(30)
	s.wantRows("3a")
	s.start(1)
	s.in(1, "1b")
	s.stop()
	s.abort(2, 2) // the whole of 2 rolls back
	s.streamCommit(2)
	s.wantRows() // its commit, had it come, holds nothing
	s.streamCommit(1)
	s.wantRows("1a", "1b")
}

// A reload while a transaction streams: every part is evaluated under the
// rules it began with.
func TestAssembleStreamKeepsItsRulesAcrossReload(t *testing.T) {
	s := newScript(t)
	s.gen = 1
	s.start(5)
	s.in(5, "a")
	s.stop()
	s.gen = 2 // the rules are reloaded
	s.start(5)
	s.in(6, "b")
	s.stop()
	s.gen = 3
	s.start(5)
	s.in(7, "c")
	s.stop()
	s.streamCommit(5)
	if g := s.last().Tx.gen; g != 1 {
		t.Fatalf("transaction evaluated under rules %d, want 1 (those it began with)", g)
	}
	s.wantRows("a", "b", "c")
	// A transaction begun after the reload uses the new rules.
	s.begin(8)
	s.commit(80)
	if g := s.last().Tx.gen; g != 3 {
		t.Fatalf("next transaction under rules %d, want 3", g)
	}
}

// One subtransaction per row (a PL/pgSQL loop with an EXCEPTION block)
// keeps at most maxParts parts, whatever the count.
func TestAssembleFoldsManySubtransactions(t *testing.T) {
	s := newScript(t)
	s.asm.maxParts = 8
	const n = 10_000
	var want []string
	s.start(1)
	for i := range n {
		v := strconv.Itoa(i)
		s.in(uint32(100+i), v)
		want = append(want, v)
		if parts := len(s.asm.streams[1].parts); parts > 8 {
			t.Fatalf("%d parts kept after %d subtransactions", parts, i+1)
		}
	}
	s.stop()
	// The last subtransaction is still apart: its abort is exact.
	s.abort(1, 100+n-1)
	s.streamCommit(1)
	s.wantRows(want[:n-1]...)
	if s.last().Inexact {
		t.Fatal("abort of a part kept apart made the transaction inexact")
	}
}

// A subtransaction folded in cannot be dropped: its changes stay (more
// invalidation, never less), and the transaction says so.
func TestAssembleAbortOfFoldedSubtransactionIsInexact(t *testing.T) {
	s := newScript(t)
	s.asm.maxParts = 2
	s.start(1)
	s.in(11, "a")
	s.in(12, "b")
	s.in(13, "c") // folds 11
	s.stop()
	s.abort(1, 11)
	s.abort(1, 99) // a subtransaction that changed nothing published
	s.streamCommit(1)
	if !s.last().Inexact {
		t.Fatal("abort of a folded subtransaction not reported")
	}
	s.wantRows("a", "b", "c")
}

func TestAssembleReset(t *testing.T) {
	s := newScript(t)
	s.begin(1)
	s.start(2)
	s.asm.reset()
	if s.asm.open() {
		t.Fatal("transactions still open after reset")
	}
	s.begin(3) // not "Begin inside a transaction"
	s.commit(1)
}

// FuzzAssemble drives the assembler with random interleavings of streamed
// and plain transactions and checks each commit against a model: exactly
// the rows of subtransactions not rolled back, in order — or, when the
// transaction is marked inexact, those and some rolled-back ones.
func FuzzAssemble(f *testing.F) {
	f.Add([]byte{0, 1, 1, 2, 5, 3, 4, 7}, uint8(2))
	f.Add([]byte{0, 1, 2, 1, 5, 6, 1, 9, 3, 4, 8, 9, 0, 1, 4}, uint8(1))
	f.Fuzz(func(t *testing.T, ops []byte, maxParts uint8) {
		a := newAssembler(func(Begin) *fakeTx { return &fakeTx{} })
		a.maxParts = int(maxParts%8) + 1
		type rowOf struct {
			sub uint32
			v   string
		}
		model := map[uint32][]rowOf{} // xid -> rows fed
		aborted := map[uint32]map[uint32]bool{}
		var open uint32 // the xid of the open stream block, 0 if none
		n := 0
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%6, uint32(ops[i+1]%4)+1
			var ev event
			switch op {
			case 0: // stream start
				if open != 0 {
					continue
				}
				open = arg
				ev.streamStart = &streamStart{Xid: arg}
			case 1: // stream stop
				if open == 0 {
					continue
				}
				open = 0
				ev.streamStop = true
			case 2, 3: // a change of the top transaction or of a subtransaction
				if open == 0 {
					continue
				}
				sub := open
				if op == 3 {
					sub = open*100 + uint32(ops[i+1]%3)
				}
				if aborted[open][sub] {
					continue // a rolled-back subtransaction changes nothing more
				}
				n++
				v := strconv.Itoa(n)
				model[open] = append(model[open], rowOf{sub, v})
				ev.xid, ev.change = sub, row(v)
			case 4: // abort of a subtransaction, or of the whole
				if open != 0 {
					continue
				}
				sub := arg*100 + uint32(ops[i+1]%3)
				if ops[i+1]&0x80 != 0 {
					sub = arg
					delete(model, arg)
					delete(aborted, arg)
				} else if model[arg] != nil {
					if aborted[arg] == nil {
						aborted[arg] = map[uint32]bool{}
					}
					aborted[arg][sub] = true
					// Later changes of a rolled-back subxid do not happen.
				}
				ev.streamAbort = &streamAbort{Xid: arg, SubXid: sub}
			case 5: // commit
				if open != 0 {
					continue
				}
				ev.streamCommit = &Commit{Xid: arg}
			}
			c, done, err := a.feed(&ev)
			if err != nil {
				t.Fatalf("feed: %v", err)
			}
			if !done {
				continue
			}
			var exact, all []string
			for _, r := range model[arg] {
				all = append(all, r.v)
				if !aborted[arg][r.sub] {
					exact = append(exact, r.v)
				}
			}
			delete(model, arg)
			delete(aborted, arg)
			got := c.Tx.rows
			if !c.Inexact {
				wantEqual(t, got, exact)
				continue
			}
			// Inexact: a subsequence of all that holds every exact row.
			for _, v := range exact {
				if !slices.Contains(got, v) {
					t.Fatalf("inexact commit lost row %s: %q of %q", v, got, all)
				}
			}
			for _, v := range got {
				if !slices.Contains(all, v) {
					t.Fatalf("commit holds row %s never fed", v)
				}
			}
		}
	})
}
