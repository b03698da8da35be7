package replication

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

// msg builds pgoutput messages.
type msg []byte

func m(t byte) msg               { return msg{t} }
func (b msg) u8(v byte) msg      { return append(b, v) }
func (b msg) u16(v uint16) msg   { return binary.BigEndian.AppendUint16(b, v) }
func (b msg) u32(v uint32) msg   { return binary.BigEndian.AppendUint32(b, v) }
func (b msg) u64(v uint64) msg   { return binary.BigEndian.AppendUint64(b, v) }
func (b msg) str(s string) msg   { return append(append(b, s...), 0) }
func (b msg) text(s string) msg  { return b.u8('t').u32(uint32(len(s))).bytes(s) }
func (b msg) bin(s string) msg   { return b.u8('b').u32(uint32(len(s))).bytes(s) }
func (b msg) bytes(s string) msg { return append(b, s...) }
func (b msg) null() msg          { return b.u8('n') }
func (b msg) unchanged() msg     { return b.u8('u') }
func (b msg) cols(n uint16) msg  { return b.u16(n) }
func pgTime(t time.Time) uint64 {
	return uint64(t.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Microseconds())
}
func relationMsg(id uint32) msg {
	return m('R').u32(id).str("public").str("runs").u8('f').u16(3).
		u8(1).str("id").u32(20).u32(0xffffffff).
		u8(0).str("run_id").u32(20).u32(0xffffffff).
		u8(0).str("body").u32(25).u32(0xffffffff)
}

var commitAt = time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)

func validMessages() []msg {
	return []msg{
		m('B').u64(0x16B3748).u64(pgTime(commitAt)).u32(42),
		relationMsg(7),
		m('Y').u32(1000).str("public").str("mood"),
		m('O').u64(5).str("origin"),
		m('I').u32(7).u8('N').cols(3).text("1").text("5").null(),
		m('U').u32(7).u8('O').cols(3).text("1").text("5").text("big").u8('N').cols(3).text("1").text("6").unchanged(),
		m('U').u32(7).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").text("6").text("x"),
		m('U').u32(7).u8('N').cols(3).text("1").text("6").text("x"),
		m('D').u32(7).u8('O').cols(3).text("1").text("6").text("x"),
		m('T').u32(1).u8(3).u32(7),
		m('M').u8(1).u64(9).str("prefix").u32(2).bytes("hi"),
		m('C').u8(0).u64(0x16B3748).u64(0x16B3800).u64(pgTime(commitAt)),
	}
}

func decodeAll(t *testing.T, d *decoder, msgs ...msg) []event {
	t.Helper()
	var out []event
	for _, b := range msgs {
		ev, err := d.decode(b)
		if err != nil {
			t.Fatalf("decode %q: %v", b[0], err)
		}
		out = append(out, ev)
	}
	return out
}

func TestDecodeMessages(t *testing.T) {
	d := newDecoder(map[string][]string{"public.runs": {"id"}})
	evs := decodeAll(t, d, validMessages()...)

	if b := evs[0].begin; b == nil || b.Xid != 42 || b.FinalLSN != 0x16B3748 || !b.CommitTime.Equal(commitAt) {
		t.Errorf("begin %+v", evs[0].begin)
	}
	rel := evs[1].relation
	if rel == nil || rel.Table() != "public.runs" || rel.ReplicaIdentity != 'f' || len(rel.Columns) != 3 ||
		!rel.Columns[0].Identity || rel.Columns[1].Identity || rel.Columns[2].TypeOID != 25 || len(rel.PrimaryKey) != 1 {
		t.Fatalf("relation %+v", rel)
	}
	empty := func(e event) bool {
		return e.begin == nil && e.commit == nil && e.change == nil && e.truncate == nil && e.relation == nil
	}
	if !empty(evs[2]) || !empty(evs[3]) || !empty(evs[10]) {
		t.Error("type, origin and message should decode to nothing")
	}
	if c := evs[11].commit; c == nil || c.CommitLSN != 0x16B3748 || c.EndLSN != 0x16B3800 || !c.CommitTime.Equal(commitAt) {
		t.Errorf("commit %+v", evs[11].commit)
	}
	tr := evs[9].truncate
	if len(tr) != 1 || tr[0].Op != OpTruncate || tr[0].Rel != rel || tr[0].TruncateOptions != 3 {
		t.Errorf("truncate %+v", tr)
	}
}

func TestDecodeChanges(t *testing.T) {
	all := validMessages()
	cases := []struct {
		name  string
		msg   msg
		check func(t *testing.T, c *Change)
	}{
		{"insert", all[4], func(t *testing.T, c *Change) {
			if c.Op != OpInsert || c.Old.Kind != NoTuple || str(c.NewValue(1)) != "5" {
				t.Errorf("%+v", c)
			}
			if v, ok := c.NewValue(2); !ok || v.Kind != Null {
				t.Errorf("NULL decoded as %+v %v", v, ok)
			}
		}},
		{"update with old row and unchanged TOAST", all[5], func(t *testing.T, c *Change) {
			if ch, known := c.Changed(1); !ch || !known {
				t.Error("run_id 5 -> 6 not a known change")
			}
			if ch, known := c.Changed(2); ch || !known {
				t.Error("unchanged TOAST should be a known non-change")
			}
			if str(c.NewValue(2)) != "big" {
				t.Error("unchanged TOAST new value should read the old one")
			}
		}},
		{"update with key tuple", all[6], func(t *testing.T, c *Change) {
			if c.Old.Kind != KeyTuple || str(c.OldValue(0)) != "1" || str(c.NewValue(0)) != "2" {
				t.Errorf("%+v", c)
			}
			if _, known := c.Changed(1); known {
				t.Error("a non-key column's change cannot be known from a key tuple")
			}
		}},
		{"update without old row", all[7], func(t *testing.T, c *Change) {
			if ch, known := c.Changed(0); ch || !known {
				t.Error("identity column without key tuple is unchanged")
			}
			if _, known := c.Changed(1); known {
				t.Error("non-identity column without old row is unknown")
			}
		}},
		{"delete", all[8], func(t *testing.T, c *Change) {
			if c.Op != OpDelete || c.Old.Kind != OldTuple || str(c.OldValue(1)) != "6" {
				t.Errorf("%+v", c)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(nil)
			decodeAll(t, d, relationMsg(7))
			ev := decodeAll(t, d, tc.msg)[0]
			if ev.change == nil {
				t.Fatal("no change")
			}
			tc.check(t, ev.change)
		})
	}
}

func TestChangedNullTransitions(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, relationMsg(7))
	for _, mm := range []msg{
		m('U').u32(7).u8('O').cols(3).text("1").null().null().u8('N').cols(3).text("1").text("5").null(),
		m('U').u32(7).u8('O').cols(3).text("1").text("5").null().u8('N').cols(3).text("1").null().null(),
	} {
		ev := decodeAll(t, d, mm)[0]
		if ch, known := ev.change.Changed(1); !ch || !known {
			t.Errorf("NULL transition not a change: %q", mm)
		}
		if ch, known := ev.change.Changed(2); ch || !known {
			t.Errorf("NULL to NULL is a change: %q", mm)
		}
	}
}

func TestRelationCacheIsReplaced(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, relationMsg(7))
	altered := m('R').u32(7).str("public").str("runs").u8('d').u16(1).u8(1).str("id").u32(20).u32(0)
	decodeAll(t, d, altered)
	ev := decodeAll(t, d, m('I').u32(7).u8('N').cols(1).text("9"))[0]
	if len(ev.change.Rel.Columns) != 1 || ev.change.Rel.ReplicaIdentity != 'd' {
		t.Errorf("relation not replaced: %+v", ev.change.Rel)
	}
}

func str(v Value, ok bool) string {
	if !ok {
		return "<unknown>"
	}
	return string(v.Data)
}

func TestDecodeStreaming(t *testing.T) {
	d := newDecoder(nil)
	evs := decodeAll(t, d,
		m('S').u32(77).u8(1),
		m('R').u32(77).u32(7).str("public").str("runs").u8('f').u16(1).u8(1).str("id").u32(20).u32(0),
		m('I').u32(78).u32(7).u8('N').cols(1).text("1"),
		m('E'),
		m('A').u32(77).u32(78),
		m('c').u32(77).u8(0).u64(0x100).u64(0x180).u64(pgTime(commitAt)),
	)
	if s := evs[0].streamStart; s == nil || s.Xid != 77 || !s.First {
		t.Errorf("stream start %+v", s)
	}
	if evs[1].relation == nil || evs[1].xid != 77 {
		t.Errorf("relation in stream: %+v", evs[1])
	}
	if evs[2].change == nil || evs[2].xid != 78 || str(evs[2].change.NewValue(0)) != "1" {
		t.Errorf("change in stream: %+v", evs[2])
	}
	if !evs[3].streamStop {
		t.Error("stream stop")
	}
	if a := evs[4].streamAbort; a == nil || a.Xid != 77 || a.SubXid != 78 {
		t.Errorf("stream abort %+v", a)
	}
	if c := evs[5].streamCommit; c == nil || c.Xid != 77 || c.CommitLSN != 0x100 || c.EndLSN != 0x180 {
		t.Errorf("stream commit %+v", c)
	}
	// Outside a stream, changes carry no xid.
	if ev := decodeAll(t, d, m('I').u32(7).u8('N').cols(1).text("2"))[0]; ev.xid != 0 || ev.change == nil {
		t.Errorf("change outside a stream: %+v", ev)
	}
	if _, err := newDecoder(nil).decode(m('E')); !errors.Is(err, ErrMalformed) {
		t.Errorf("stream stop outside a stream: %v", err)
	}
}

// --- Begin, Commit, Relation ---------------------------------------------

func TestDecodeBeginCommitValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   time.Time
		lsn  uint64
		xid  uint32
	}{
		{"epoch", time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), 0, 0},
		{"before epoch", time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC), 1, 1},
		{"microseconds", time.Date(2026, 3, 4, 5, 6, 7, 123456000, time.UTC), 0x1_0000_0000, 0x8000_0000},
		{"max lsn and xid", commitAt, math.MaxUint64, math.MaxUint32},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(nil)
			evs := decodeAll(t, d,
				m('B').u64(tc.lsn).u64(pgTime(tc.at)).u32(tc.xid),
				m('C').u8(0).u64(tc.lsn).u64(tc.lsn+0x30).u64(pgTime(tc.at)),
			)
			b := evs[0].begin
			if b == nil || uint64(b.FinalLSN) != tc.lsn || b.Xid != tc.xid || !b.CommitTime.Equal(tc.at) {
				t.Errorf("begin = %+v, want lsn %#x xid %d at %v", b, tc.lsn, tc.xid, tc.at)
			}
			c := evs[1].commit
			if c == nil || uint64(c.CommitLSN) != tc.lsn || uint64(c.EndLSN) != tc.lsn+0x30 || !c.CommitTime.Equal(tc.at) {
				t.Errorf("commit = %+v", c)
			}
			if c != nil && c.Xid != 0 {
				t.Errorf("commit carries no xid in protocol v1, got %d", c.Xid)
			}
		})
	}
}

func TestDecodeRelation(t *testing.T) {
	pks := map[string][]string{
		"public.runs":      {"id"},
		"public.pair":      {"b", "a"}, // key order is the catalog's, not the columns'
		"public.missing":   {"nope"},   // a key column the publication does not carry
		"pg_catalog.thing": {"x"},
	}
	for _, tc := range []struct {
		name    string
		msg     msg
		table   string
		ident   byte
		cols    []Column
		pk      []int
		stateOK bool
	}{
		{"default identity with key", relationMsg(7), "public.runs", 'f',
			[]Column{{"id", 20, true}, {"run_id", 20, false}, {"body", 25, false}}, []int{0}, true},
		{"no columns", m('R').u32(8).str("public").str("empty").u8('n').u16(0), "public.empty", 'n', nil, nil, true},
		{"index identity", m('R').u32(9).str("public").str("pair").u8('i').u16(3).
			u8(1).str("a").u32(23).u32(0).u8(0).str("c").u32(25).u32(0).u8(1).str("b").u32(23).u32(0),
			"public.pair", 'i', []Column{{"a", 23, true}, {"c", 25, false}, {"b", 23, true}}, []int{2, 0}, true},
		{"flags other than bit 0 ignored", m('R').u32(10).str("public").str("missing").u8('d').u16(2).
			u8(0xfe).str("nope2").u32(16).u32(0).u8(0xff).str("k").u32(16).u32(0),
			"public.missing", 'd', []Column{{"nope2", 16, false}, {"k", 16, true}}, nil, true},
		{"empty namespace is pg_catalog", m('R').u32(11).str("").str("thing").u8('d').u16(1).u8(1).str("x").u32(26).u32(0),
			"pg_catalog.thing", 'd', []Column{{"x", 26, true}}, []int{0}, true},
		{"non-ASCII names", m('R').u32(12).str("schéma").str("tâble").u8('d').u16(1).u8(0).str("çol").u32(25).u32(0xffffffff),
			"schéma.tâble", 'd', []Column{{"çol", 25, false}}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(pks)
			rel := decodeAll(t, d, tc.msg)[0].relation
			if rel == nil {
				t.Fatal("no relation")
			}
			if rel.Table() != tc.table || rel.ReplicaIdentity != tc.ident || !slices.Equal(rel.Columns, tc.cols) || !slices.Equal(rel.PrimaryKey, tc.pk) {
				t.Errorf("relation %+v\nwant table %s identity %c columns %+v pk %v", rel, tc.table, tc.ident, tc.cols, tc.pk)
			}
			if d.rels[rel.ID] != rel {
				t.Error("relation not cached under its id")
			}
		})
	}
}

// A Relation re-sent for the same id (after ALTER TABLE) replaces the cached
// one with a new value; the old value, which a Tx may still hold, is not
// modified. Other relations are unaffected.
func TestRelationCacheReplacement(t *testing.T) {
	d := newDecoder(map[string][]string{"public.runs": {"id"}})
	evs := decodeAll(t, d, relationMsg(7), relationMsg(8))
	old, other := evs[0].relation, evs[1].relation
	oldCols := slices.Clone(old.Columns)

	// ALTER TABLE runs RENAME id TO key, ADD note text, REPLICA IDENTITY FULL.
	altered := m('R').u32(7).str("public").str("runs").u8('f').u16(4).
		u8(1).str("key").u32(20).u32(0xffffffff).
		u8(1).str("run_id").u32(20).u32(0xffffffff).
		u8(1).str("body").u32(25).u32(0xffffffff).
		u8(1).str("note").u32(25).u32(0xffffffff)
	nw := decodeAll(t, d, altered)[0].relation
	if nw == old {
		t.Fatal("cache entry updated in place")
	}
	if !slices.Equal(old.Columns, oldCols) || old.ReplicaIdentity != 'f' || !slices.Equal(old.PrimaryKey, []int{0}) {
		t.Errorf("old relation modified: %+v", old)
	}
	if len(nw.Columns) != 4 || nw.Columns[0].Name != "key" || !nw.Columns[3].Identity || nw.PrimaryKey != nil {
		t.Errorf("new relation %+v (primary key column renamed: PrimaryKey must be nil)", nw)
	}

	// Changes now use the new shape: four columns, not three.
	ev := decodeAll(t, d, m('I').u32(7).u8('N').cols(4).text("1").text("2").text("3").text("4"))[0]
	if ev.change.Rel != nw {
		t.Error("insert not attached to the new relation")
	}
	if _, err := d.decode(m('I').u32(7).u8('N').cols(3).text("1").text("2").text("3")); !errors.Is(err, ErrMalformed) {
		t.Errorf("insert with the old column count: err = %v", err)
	}
	// Relation 8 is untouched.
	ev = decodeAll(t, d, m('I').u32(8).u8('N').cols(3).text("1").text("2").text("3"))[0]
	if ev.change.Rel != other || d.rels[8] != other {
		t.Error("relation 8 replaced")
	}
}

// Relation strings are copies: the message buffer is reused for the next
// message, but the relation stays in the cache.
func TestRelationDoesNotAliasMessage(t *testing.T) {
	d := newDecoder(nil)
	b := relationMsg(7)
	rel := decodeAll(t, d, b)[0].relation
	for i := 5; i < len(b); i++ {
		b[i] = 'X'
	}
	if rel.Table() != "public.runs" || rel.Columns[0].Name != "id" || rel.Columns[2].Name != "body" {
		t.Errorf("relation aliases the message buffer: %+v", rel)
	}
}

func TestChangeForUnknownRelation(t *testing.T) {
	for name, b := range map[string]msg{
		"insert":          m('I').u32(8).u8('N').cols(3).text("1").text("2").text("3"),
		"update":          m('U').u32(8).u8('N').cols(3).text("1").text("2").text("3"),
		"delete":          m('D').u32(8).u8('K').cols(3).text("1").null().null(),
		"truncate":        m('T').u32(1).u8(0).u32(8),
		"truncate second": m('T').u32(2).u8(0).u32(7).u32(8),
	} {
		t.Run(name, func(t *testing.T) {
			d := newDecoder(nil)
			decodeAll(t, d, relationMsg(7))
			// On error the event is to be ignored: a Truncate failing
			// on its second relation returns the first one's Change
			// alongside the error (every caller drops the session).
			if _, err := d.decode(b); !errors.Is(err, ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

// --- Change helpers -----------------------------------------------------

// show renders what OldValue or NewValue returned: "?" when unknown.
func show(v Value, ok bool) string {
	switch {
	case !ok:
		return "?"
	case v.Kind == Null:
		return "NULL"
	case v.Kind == Text:
		return "t:" + string(v.Data)
	case v.Kind == Binary:
		return "b:" + string(v.Data)
	}
	return fmt.Sprintf("kind %q", byte(v.Kind))
}

type verdict struct{ changed, known bool }

var (
	unchangedV = verdict{false, true}
	changedV   = verdict{true, true}
	unknownV   = verdict{false, false}
)

// Relation 9: id is the replica identity (REPLICA IDENTITY DEFAULT with a
// primary key); a and b are not.
var rel9 = m('R').u32(9).str("public").str("t").u8('d').u16(3).
	u8(1).str("id").u32(23).u32(0xffffffff).
	u8(0).str("a").u32(25).u32(0xffffffff).
	u8(0).str("b").u32(25).u32(0xffffffff)

func TestChangeValues(t *testing.T) {
	for _, tc := range []struct {
		name     string
		msg      msg
		op       Op
		old, new [3]string
		changed  [3]verdict
	}{
		// UPDATE, REPLICA IDENTITY DEFAULT, key unchanged: no old tuple.
		// The key did not change (else a K tuple is sent); the others are
		// unknown, except an unchanged TOAST value.
		{"update, no old tuple", m('U').u32(9).u8('N').cols(3).text("1").text("x").unchanged(), OpUpdate,
			[3]string{"t:1", "?", "?"}, [3]string{"t:1", "t:x", "?"},
			[3]verdict{unchangedV, unknownV, unchangedV}},
		{"update, no old tuple, NULL new value", m('U').u32(9).u8('N').cols(3).text("1").null().null(), OpUpdate,
			[3]string{"t:1", "?", "?"}, [3]string{"t:1", "NULL", "NULL"},
			[3]verdict{unchangedV, unknownV, unknownV}},
		// UPDATE changing the key: K tuple with the old key, NULL for the rest.
		{"update, key tuple", m('U').u32(9).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").text("x").unchanged(), OpUpdate,
			[3]string{"t:1", "?", "?"}, [3]string{"t:2", "t:x", "?"},
			[3]verdict{changedV, unknownV, unchangedV}},
		{"update, key tuple, same key", m('U').u32(9).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("1").null().text("y"), OpUpdate,
			[3]string{"t:1", "?", "?"}, [3]string{"t:1", "NULL", "t:y"},
			[3]verdict{unchangedV, unknownV, unknownV}},
		// REPLICA IDENTITY FULL: the whole old row.
		{"update, old row, NULL transitions", m('U').u32(9).u8('O').cols(3).text("1").null().text("x").u8('N').cols(3).text("1").text("y").null(), OpUpdate,
			[3]string{"t:1", "NULL", "t:x"}, [3]string{"t:1", "t:y", "NULL"},
			[3]verdict{unchangedV, changedV, changedV}},
		{"update, old row, NULL to NULL and same text", m('U').u32(9).u8('O').cols(3).text("1").null().text("same").u8('N').cols(3).text("1").null().text("same"), OpUpdate,
			[3]string{"t:1", "NULL", "t:same"}, [3]string{"t:1", "NULL", "t:same"},
			[3]verdict{unchangedV, unchangedV, unchangedV}},
		{"update, old row, empty text is not NULL", m('U').u32(9).u8('O').cols(3).text("1").text("").null().u8('N').cols(3).text("1").null().text(""), OpUpdate,
			[3]string{"t:1", "t:", "NULL"}, [3]string{"t:1", "NULL", "t:"},
			[3]verdict{unchangedV, changedV, changedV}},
		{"update, old row, text changed", m('U').u32(9).u8('O').cols(3).text("1").text("ab").text("x").u8('N').cols(3).text("1").text("abc").text("x"), OpUpdate,
			[3]string{"t:1", "t:ab", "t:x"}, [3]string{"t:1", "t:abc", "t:x"},
			[3]verdict{unchangedV, changedV, unchangedV}},
		// An unchanged TOAST value reads through to the old row.
		{"update, old row, unchanged TOAST", m('U').u32(9).u8('O').cols(3).text("1").text("a").text("big").u8('N').cols(3).text("1").text("a").unchanged(), OpUpdate,
			[3]string{"t:1", "t:a", "t:big"}, [3]string{"t:1", "t:a", "t:big"},
			[3]verdict{unchangedV, unchangedV, unchangedV}},
		// An old row that itself lacks a TOAST value: the old value is unknown.
		{"update, old row with unchanged TOAST", m('U').u32(9).u8('O').cols(3).text("1").text("a").unchanged().u8('N').cols(3).text("1").text("a").text("new"), OpUpdate,
			[3]string{"t:1", "t:a", "?"}, [3]string{"t:1", "t:a", "t:new"},
			[3]verdict{unchangedV, unchangedV, unknownV}},
		{"update, binary values", m('U').u32(9).u8('O').cols(3).bin("\x00\x01").bin("a").null().u8('N').cols(3).bin("\x00\x01").bin("b").null(), OpUpdate,
			[3]string{"b:\x00\x01", "b:a", "NULL"}, [3]string{"b:\x00\x01", "b:b", "NULL"},
			[3]verdict{unchangedV, changedV, unchangedV}},

		// Changed is only decided for UPDATE.
		{"insert", m('I').u32(9).u8('N').cols(3).text("1").null().text("x"), OpInsert,
			[3]string{"?", "?", "?"}, [3]string{"t:1", "NULL", "t:x"},
			[3]verdict{unknownV, unknownV, unknownV}},
		{"delete, key tuple", m('D').u32(9).u8('K').cols(3).text("1").null().null(), OpDelete,
			[3]string{"t:1", "?", "?"}, [3]string{"?", "?", "?"},
			[3]verdict{unknownV, unknownV, unknownV}},
		{"delete, old row", m('D').u32(9).u8('O').cols(3).text("1").text("a").null(), OpDelete,
			[3]string{"t:1", "t:a", "NULL"}, [3]string{"?", "?", "?"},
			[3]verdict{unknownV, unknownV, unknownV}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(nil)
			decodeAll(t, d, rel9)
			c := decodeAll(t, d, tc.msg)[0].change
			if c == nil || c.Op != tc.op || c.Rel.ID != 9 {
				t.Fatalf("change %+v", c)
			}
			for i := range 3 {
				if got := show(c.OldValue(i)); got != tc.old[i] {
					t.Errorf("OldValue(%d) = %s, want %s", i, got, tc.old[i])
				}
				if got := show(c.NewValue(i)); got != tc.new[i] {
					t.Errorf("NewValue(%d) = %s, want %s", i, got, tc.new[i])
				}
				if ch, known := c.Changed(i); (verdict{ch, known}) != tc.changed[i] {
					t.Errorf("Changed(%d) = %v, %v; want %v", i, ch, known, tc.changed[i])
				}
			}
		})
	}
}

func TestChangeTupleKinds(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, rel9)
	for _, tc := range []struct {
		msg      msg
		old, new TupleKind
	}{
		{m('I').u32(9).u8('N').cols(3).text("1").null().null(), NoTuple, NewTuple},
		{m('U').u32(9).u8('N').cols(3).text("1").null().null(), NoTuple, NewTuple},
		{m('U').u32(9).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").null().null(), KeyTuple, NewTuple},
		{m('U').u32(9).u8('O').cols(3).text("1").null().null().u8('N').cols(3).text("2").null().null(), OldTuple, NewTuple},
		{m('D').u32(9).u8('K').cols(3).text("1").null().null(), KeyTuple, NoTuple},
		{m('D').u32(9).u8('O').cols(3).text("1").null().null(), OldTuple, NoTuple},
	} {
		c := decodeAll(t, d, tc.msg)[0].change
		if c.Old.Kind != tc.old || c.New.Kind != tc.new {
			t.Errorf("%q: old %q new %q, want %q %q", tc.msg[0], c.Old.Kind, c.New.Kind, tc.old, tc.new)
		}
		if (c.Old.Kind == NoTuple) != (c.Old.Values == nil) || (c.New.Kind == NoTuple) != (c.New.Values == nil) {
			t.Errorf("%q: values without a tuple or a tuple without values: %+v", tc.msg[0], c)
		}
	}
}

// --- Truncate -----------------------------------------------------------

func TestDecodeTruncate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ids  []uint32
		opts byte
	}{
		{"one", []uint32{7}, 0},
		{"cascade", []uint32{7, 8}, 1},
		{"restart identity", []uint32{9, 7}, 2},
		{"both, three relations", []uint32{8, 9, 7}, 3},
		{"same relation twice", []uint32{7, 7}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newDecoder(nil)
			rels := map[uint32]*Relation{}
			for _, id := range []uint32{7, 8, 9} {
				rels[id] = decodeAll(t, d, relationMsg(id))[0].relation
			}
			b := m('T').u32(uint32(len(tc.ids))).u8(tc.opts)
			for _, id := range tc.ids {
				b = b.u32(id)
			}
			ev := decodeAll(t, d, b)[0]
			if ev.change != nil || len(ev.truncate) != len(tc.ids) {
				t.Fatalf("event %+v", ev)
			}
			for i, c := range ev.truncate {
				if c.Op != OpTruncate || c.Rel != rels[tc.ids[i]] || c.TruncateOptions != tc.opts ||
					c.Old.Kind != NoTuple || c.New.Kind != NoTuple {
					t.Errorf("truncate[%d] = %+v, want relation %d options %d", i, c, tc.ids[i], tc.opts)
				}
				if _, ok := c.OldValue(0); ok {
					t.Error("truncate has an old value")
				}
				if _, ok := c.NewValue(0); ok {
					t.Error("truncate has a new value")
				}
				if _, known := c.Changed(0); known {
					t.Error("truncate has a known change")
				}
			}
			if len(ev.truncate) > 1 && ev.truncate[0] == ev.truncate[1] {
				t.Error("truncate changes share one Change")
			}
		})
	}

	// A truncate naming no relation decodes to nothing (the server never
	// sends one).
	ev, err := newDecoder(nil).decode(m('T').u32(0).u8(0))
	if err != nil || ev.truncate != nil {
		t.Errorf("empty truncate: %+v, %v", ev, err)
	}
}

// --- Malformed input ----------------------------------------------------

func TestDecodeErrors(t *testing.T) {
	for name, b := range map[string]msg{
		"empty":              {},
		"unknown type":       m('Z'),
		"unknown relation":   m('I').u32(8).u8('N').cols(0),
		"relation id cut":    m('I').u8(0).u8(0),
		"bad tuple kind":     m('I').u32(7).u8('X').cols(3),
		"bad column kind":    m('I').u32(7).u8('N').cols(3).u8('q'),
		"column kind zero":   m('I').u32(7).u8('N').cols(3).u8(0),
		"insert with K":      m('I').u32(7).u8('K').cols(3).text("1").null().null(),
		"insert with O":      m('I').u32(7).u8('O').cols(3).text("1").null().null(),
		"insert no kind":     m('I').u32(7),
		"update no kind":     m('U').u32(7),
		"update bad kind":    m('U').u32(7).u8('X').cols(3).text("1").null().null(),
		"update old only":    m('U').u32(7).u8('O').cols(3).text("1").null().null(),
		"update K then K":    m('U').u32(7).u8('K').cols(3).text("1").null().null().u8('K').cols(3).text("1").null().null(),
		"update K then O":    m('U').u32(7).u8('K').cols(3).text("1").null().null().u8('O').cols(3).text("1").null().null(),
		"update N then junk": m('U').u32(7).u8('N').cols(3).text("1").null().u8('x'),
		"delete with N":      m('D').u32(7).u8('N').cols(3).text("1").null().null(),
		"delete no tuple":    m('D').u32(7),

		// Column counts must match the relation's.
		"insert too few columns":       m('I').u32(7).u8('N').cols(2).text("1").text("2"),
		"insert too many columns":      m('I').u32(7).u8('N').cols(4).text("1").text("2").text("3").text("4"),
		"insert zero columns":          m('I').u32(7).u8('N').cols(0),
		"update old tuple wrong count": m('U').u32(7).u8('O').cols(2).text("1").null().u8('N').cols(3).text("1").null().null(),
		"update new tuple wrong count": m('U').u32(7).u8('K').cols(3).text("1").null().null().u8('N').cols(2).text("1").null(),
		"delete wrong count":           m('D').u32(7).u8('K').cols(1).text("1"),
		"column count 0xffff":          m('I').u32(7).u8('N').cols(0xffff),

		// Value lengths are unsigned on the wire and bounded by the message:
		// "negative" (top bit set) lengths and lengths past the end fail.
		"text length -1":           m('I').u32(7).u8('N').cols(3).u8('t').u32(0xffffffff).bytes("abc"),
		"text length MinInt32":     m('I').u32(7).u8('N').cols(3).u8('t').u32(0x80000000).bytes("abc"),
		"binary length -1":         m('I').u32(7).u8('N').cols(3).u8('b').u32(0xffffffff).bytes("abc"),
		"huge text length":         m('I').u32(7).u8('N').cols(3).u8('t').u32(0xfffffff0),
		"text one byte short":      m('I').u32(7).u8('N').cols(3).text("1").null().u8('t').u32(4).bytes("abc"),
		"text length cut":          m('I').u32(7).u8('N').cols(3).u8('t').u8(0).u8(0),
		"old tuple value too long": m('D').u32(7).u8('O').cols(3).text("1").null().u8('b').u32(100).bytes("x"),

		"truncate unknown rel":   m('T').u32(1).u8(0).u32(99),
		"truncate huge count":    m('T').u32(0xffffffff).u8(0),
		"truncate count 2 ids 1": m('T').u32(2).u8(0).u32(7),
		"truncate id cut":        m('T').u32(1).u8(0).u8(0).u8(7),
		"truncate no options":    m('T').u32(1),

		"relation huge columns":        m('R').u32(1).str("s").str("t").u8('d').u16(0xffff),
		"relation more columns":        m('R').u32(1).str("s").str("t").u8('d').u16(2).u8(1).str("id").u32(20).u32(0),
		"relation unterminated ns":     m('R').u32(1).bytes("public"),
		"relation unterminated name":   m('R').u32(1).str("public").bytes("runs"),
		"relation unterminated col":    m('R').u32(1).str("s").str("t").u8('d').u16(1).u8(1).bytes("idxxxxxxxxxxxx"),
		"relation typmod cut":          m('R').u32(1).str("s").str("t").u8('d').u16(1).u8(1).str("id").u32(20).u16(0),
		"relation no identity":         m('R').u32(1).str("s").str("t"),
		"begin short":                  m('B').u64(1).u64(2).u16(0),
		"commit short":                 m('C').u8(0).u64(1).u64(2).u32(0),
		"commit no flags":              m('C'),
		"stream stop outside stream":   m('E'),
		"stream start short":           m('S').u32(1),
		"stream commit short":          m('c').u32(1).u8(0).u64(1),
		"stream abort short":           m('A').u32(1).u16(0),
		"begin type byte only":         m('B'),
		"relation type byte only":      m('R'),
		"update type byte only":        m('U'),
		"truncate type byte only":      m('T'),
		"stream commit type byte only": m('c'),
	} {
		t.Run(name, func(t *testing.T) {
			d := newDecoder(nil)
			decodeAll(t, d, relationMsg(7))
			if _, err := d.decode(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
			// The failure left the decoder usable: the cache still holds
			// relation 7 as it was.
			if _, err := d.decode(m('I').u32(7).u8('N').cols(3).text("1").null().null()); err != nil {
				t.Errorf("decoder unusable after the error: %v", err)
			}
		})
	}

	// Inside a stream block, a second Stream Start is an error.
	d := newDecoder(nil)
	decodeAll(t, d, m('S').u32(1).u8(1))
	if _, err := d.decode(m('S').u32(2).u8(0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("nested stream start: err = %v", err)
	}
	// So is a data message too short for its xid.
	if _, err := d.decode(m('I').u16(0)); !errors.Is(err, ErrMalformed) {
		t.Errorf("stream change without xid: err = %v", err)
	}
}

// emptyEvent reports whether ev carries nothing.
func emptyEvent(ev event) bool {
	return ev.begin == nil && ev.commit == nil && ev.change == nil && ev.truncate == nil && ev.relation == nil &&
		ev.streamStart == nil && !ev.streamStop && ev.streamCommit == nil && ev.streamAbort == nil
}

// The decoder's handling of message types, for every byte value:
//   - B C R I U D T (v1) and S E c A (v2 streaming) are decoded;
//   - Y (Type), O (Origin) and M (logical Message) are accepted and ignored
//     without being parsed: they decode to an empty event whatever follows
//     the type byte (inside a stream block only the leading xid is read);
//   - every other type byte is an error wrapping ErrMalformed, so an
//     unexpected message drops the session rather than being skipped.
func TestDecodeMessageTypes(t *testing.T) {
	decoded := "BCRIUDTSEcA"
	ignored := "YOM"
	for i := range 256 {
		typ := byte(i)
		d := newDecoder(nil)
		for _, body := range []msg{nil, {0, 0, 0, 0, 0, 0, 0, 0}, msg("garbage that is not a message")} {
			ev, err := d.decode(append(msg{typ}, body...))
			switch {
			case bytes.IndexByte([]byte(ignored), typ) >= 0:
				if err != nil || !emptyEvent(ev) {
					t.Errorf("ignored type %q with body %q: %+v, %v", typ, body, ev, err)
				}
			case bytes.IndexByte([]byte(decoded), typ) >= 0:
				if err != nil && !errors.Is(err, ErrMalformed) {
					t.Errorf("type %q: %v does not wrap ErrMalformed", typ, err)
				}
			default:
				if !errors.Is(err, ErrMalformed) || !emptyEvent(ev) {
					t.Errorf("unknown type %q with body %q: %+v, %v", typ, body, ev, err)
				}
			}
			d.inStream = false // an 'S' with a good body enters a stream block
		}
	}
	// Ignored messages inside a stream block: the xid is required, the
	// rest is not parsed.
	d := newDecoder(nil)
	decodeAll(t, d, m('S').u32(1).u8(1))
	for _, typ := range []byte(ignored) {
		if ev, err := d.decode(m(typ).u32(5).bytes("anything")); err != nil || ev.xid != 5 {
			t.Errorf("ignored %q in a stream: %+v, %v", typ, ev, err)
		}
		if _, err := d.decode(m(typ).u16(0)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ignored %q in a stream without its xid: %v", typ, err)
		}
	}
}

// streamMessages are valid messages as sent inside (or around) a stream
// block; each entry says whether the decoder must be inside one.
func streamMessages() []struct {
	msg      msg
	inStream bool
} {
	type sm = struct {
		msg      msg
		inStream bool
	}
	return []sm{
		{m('S').u32(77).u8(1), false},
		{m('R').u32(77).u32(7).str("public").str("runs").u8('f').u16(1).u8(1).str("id").u32(20).u32(0), true},
		{m('I').u32(78).u32(7).u8('N').cols(3).text("1").null().unchanged(), true},
		{m('U').u32(78).u32(7).u8('O').cols(3).text("1").null().null().u8('N').cols(3).text("1").text("2").null(), true},
		{m('D').u32(78).u32(7).u8('K').cols(3).text("1").null().null(), true},
		{m('T').u32(78).u32(2).u8(1).u32(7).u32(7), true},
		{m('E'), true},
		{m('A').u32(77).u32(78), false},
		{m('c').u32(77).u8(0).u64(0x100).u64(0x180).u64(pgTime(commitAt)), false},
	}
}

// Every proper prefix of every valid message is an error wrapping
// ErrMalformed, never a panic, and leaves the decoder as it was. The
// exceptions are the messages the decoder ignores without parsing (Type,
// Origin, Message), whose prefixes are accepted once the type byte (and
// inside a stream, the xid) is there.
func TestDecodeTruncatedMessages(t *testing.T) {
	check := func(t *testing.T, full msg, inStream bool) {
		t.Helper()
		for n := 0; n < len(full); n++ {
			d := newDecoder(nil)
			decodeAll(t, d, relationMsg(7))
			d.inStream = inStream
			ev, err := d.decode(full[:n])
			if err == nil {
				min := 1
				if inStream {
					min = 5
				}
				if n >= min && (full[0] == 'Y' || full[0] == 'O' || full[0] == 'M') {
					continue
				}
				t.Errorf("prefix %d of %q (in stream %v): no error, event %+v", n, full, inStream, ev)
				continue
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("prefix %d of %q: err = %v, want ErrMalformed", n, full, err)
			}
			if !emptyEvent(ev) { // a bounds failure yields no event
				t.Errorf("prefix %d of %q: error with an event %+v", n, full, ev)
			}
			if d.inStream != inStream {
				t.Errorf("prefix %d of %q: stream state changed", n, full)
			}
			if len(d.rels) != 1 || len(d.rels[7].Columns) != 3 {
				t.Errorf("prefix %d of %q: relation cache changed: %v", n, full, d.rels)
			}
		}
	}
	for _, full := range validMessages() {
		check(t, full, false)
	}
	for _, sm := range streamMessages() {
		check(t, sm.msg, sm.inStream)
	}
}

// --- Buffer reuse and lifetimes -----------------------------------------

// The decoder reuses one Change for every row change: it is valid until the
// next decode, which overwrites it completely (nothing of the previous
// change's old tuple survives).
func TestDecoderReusesChange(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, rel9, relationMsg(7))
	first := decodeAll(t, d, m('U').u32(9).u8('O').cols(3).text("1").text("a").text("b").u8('N').cols(3).text("1").text("c").text("b"))[0].change
	if first.Old.Kind != OldTuple {
		t.Fatal("no old tuple")
	}
	for _, tc := range []struct {
		msg msg
		op  Op
		old TupleKind
	}{
		{m('I').u32(7).u8('N').cols(3).text("2").null().null(), OpInsert, NoTuple},
		{m('U').u32(9).u8('K').cols(3).text("2").null().null().u8('N').cols(3).text("3").null().null(), OpUpdate, KeyTuple},
		{m('U').u32(9).u8('N').cols(3).text("3").null().null(), OpUpdate, NoTuple},
		{m('D').u32(7).u8('K').cols(3).text("4").null().null(), OpDelete, KeyTuple},
		{m('I').u32(9).u8('N').cols(3).text("5").text("x").text("y"), OpInsert, NoTuple},
	} {
		c := decodeAll(t, d, tc.msg)[0].change
		if c != first {
			t.Error("Change not reused")
		}
		if c.Op != tc.op || c.Old.Kind != tc.old || (tc.old == NoTuple && c.Old.Values != nil) ||
			(tc.op == OpDelete) != (c.New.Kind == NoTuple) || (tc.op == OpDelete && c.New.Values != nil) {
			t.Errorf("%q: stale fields: %+v", tc.msg, c)
		}
		if tc.op != OpTruncate && c.TruncateOptions != 0 {
			t.Errorf("%q: TruncateOptions %d", tc.msg, c.TruncateOptions)
		}
		if tc.op == OpUpdate && tc.old == NoTuple {
			if _, known := c.Changed(1); known {
				t.Errorf("%q: a stale old tuple makes Changed known", tc.msg)
			}
		}
	}
}

// Values are not copied: Data points into the message, valid only while the
// message buffer is, and is capped so that a consumer appending to it
// cannot overwrite the rest of the message.
func TestValuesAliasMessage(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, relationMsg(7))
	b := m('U').u32(7).u8('O').cols(3).text("1").text("ab").bin("cd").u8('N').cols(3).text("1").text("xy").null()
	c := decodeAll(t, d, b)[0].change
	for _, tup := range []Tuple{c.Old, c.New} {
		for i, v := range tup.Values {
			if len(v.Data) != cap(v.Data) {
				t.Errorf("%c[%d]: cap %d > len %d", tup.Kind, i, cap(v.Data), len(v.Data))
			}
		}
	}
	_ = append(c.Old.Values[1].Data, "ZZZZZZZZ"...)
	if show(c.Old.Values[2], true) != "b:cd" {
		t.Errorf("append to a value overwrote the next one: %q", c.Old.Values[2].Data)
	}
	// Zero-copy: the bytes are the message's.
	i := bytes.Index(b, []byte("xy"))
	b[i] = 'Q'
	if got := string(c.New.Values[1].Data); got != "Qy" {
		t.Errorf("value does not alias the message: %q", got)
	}
}

// Decoding a transaction's messages allocates nothing once the buffers
// have grown.
func TestDecodeChangeAllocations(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, relationMsg(7))
	msgs := []msg{
		m('B').u64(0x16B3748).u64(pgTime(commitAt)).u32(42),
		m('C').u8(0).u64(0x16B3748).u64(0x16B3800).u64(pgTime(commitAt)),
		m('I').u32(7).u8('N').cols(3).text("1").text("5").null(),
		m('U').u32(7).u8('O').cols(3).text("1").text("5").text("big").u8('N').cols(3).text("1").text("6").unchanged(),
		m('D').u32(7).u8('K').cols(3).text("1").null().null(),
	}
	decodeAll(t, d, msgs...)
	for _, b := range msgs {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := d.decode(b); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("decoding %q allocates %.0f times", b[0], allocs)
		}
	}
}

// --- Fuzzing -------------------------------------------------------------

// seq joins messages into one fuzz input: each message preceded by its
// length as a big-endian uint16, the framing FuzzDecode splits on.
func seq(msgs ...msg) []byte {
	var out []byte
	for _, b := range msgs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	return out
}

func FuzzDecode(f *testing.F) {
	all := validMessages()
	for _, b := range all {
		f.Add([]byte(b))
		f.Add(seq(relationMsg(7), b))
	}
	for _, sm := range streamMessages() {
		f.Add([]byte(sm.msg))
	}
	var stream []msg
	for _, sm := range streamMessages() {
		stream = append(stream, sm.msg)
	}
	f.Add(seq(stream...))
	f.Add(seq(all...))
	f.Add(seq(rel9, m('U').u32(9).u8('K').cols(3).text("1").null().null().u8('N').cols(3).text("2").text("x").unchanged(),
		m('R').u32(9).str("").str("t").u8('f').u16(1).u8(1).str("id").u32(23).u32(0),
		m('U').u32(9).u8('O').cols(1).bin("\x01").u8('N').cols(1).null(),
		m('T').u32(1).u8(3).u32(9)))

	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(map[string][]string{"public.runs": {"id"}, "public.t": {"id"}, "pg_catalog.t": {"id"}})
		try := func(b []byte) {
			ev, err := d.decode(b)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error does not wrap ErrMalformed: %v", err)
				}
				return
			}
			set := 0
			for _, ok := range []bool{ev.begin != nil, ev.commit != nil, ev.change != nil, ev.truncate != nil,
				ev.relation != nil, ev.streamStart != nil, ev.streamStop, ev.streamCommit != nil, ev.streamAbort != nil} {
				if ok {
					set++
				}
			}
			if set > 1 {
				t.Fatalf("event with %d parts: %+v", set, ev)
			}
			if rel := ev.relation; rel != nil {
				if d.rels[rel.ID] != rel {
					t.Fatal("relation not cached")
				}
				for _, i := range rel.PrimaryKey {
					if i < 0 || i >= len(rel.Columns) {
						t.Fatalf("primary key index %d of %d columns", i, len(rel.Columns))
					}
				}
			}
			if c := ev.change; c != nil {
				checkChange(t, d, c, b)
			}
			for _, c := range ev.truncate {
				if c.Op != OpTruncate || c.Rel == nil || d.rels[c.Rel.ID] != c.Rel {
					t.Fatalf("truncate %+v", c)
				}
			}
		}
		try(data)
		// The same bytes as a sequence of length-prefixed messages, so
		// that Relation-then-change (and stream block) sequences are
		// explored.
		for len(data) >= 2 {
			n := int(binary.BigEndian.Uint16(data))
			data = data[2:]
			if n > len(data) {
				n = len(data)
			}
			try(data[:n])
			data = data[n:]
		}
	})
}

// checkChange verifies the invariants of a decoded row change and runs the
// Change helpers on every column.
func checkChange(t *testing.T, d *decoder, c *Change, msg []byte) {
	t.Helper()
	if c.Rel == nil || d.rels[c.Rel.ID] != c.Rel {
		t.Fatalf("change without its cached relation: %+v", c)
	}
	n := len(c.Rel.Columns)
	for _, tup := range []Tuple{c.Old, c.New} {
		if tup.Kind == NoTuple {
			if tup.Values != nil {
				t.Fatalf("values without a tuple: %+v", c)
			}
			continue
		}
		if len(tup.Values) != n {
			t.Fatalf("%c tuple of %d values for %d columns", tup.Kind, len(tup.Values), n)
		}
		for _, v := range tup.Values {
			switch v.Kind {
			case Null, Unchanged:
				if v.Data != nil {
					t.Fatalf("%c value with data", v.Kind)
				}
			case Text, Binary:
				if cap(v.Data) != len(v.Data) || len(v.Data) > len(msg) {
					t.Fatalf("value data len %d cap %d in a message of %d", len(v.Data), cap(v.Data), len(msg))
				}
			default:
				t.Fatalf("value kind %q", byte(v.Kind))
			}
		}
	}
	switch c.Op {
	case OpInsert:
		if c.Old.Kind != NoTuple || c.New.Kind != NewTuple {
			t.Fatalf("insert tuples %q %q", c.Old.Kind, c.New.Kind)
		}
	case OpUpdate:
		if c.Old.Kind == NewTuple || c.New.Kind != NewTuple {
			t.Fatalf("update tuples %q %q", c.Old.Kind, c.New.Kind)
		}
	case OpDelete:
		if (c.Old.Kind != KeyTuple && c.Old.Kind != OldTuple) || c.New.Kind != NoTuple {
			t.Fatalf("delete tuples %q %q", c.Old.Kind, c.New.Kind)
		}
	default:
		t.Fatalf("op %v", c.Op)
	}
	for i := range n {
		ov, oldKnown := c.OldValue(i)
		nv, newKnown := c.NewValue(i)
		ch, known := c.Changed(i)
		if oldKnown && (ov.Kind == Absent || ov.Kind == Unchanged) || newKnown && (nv.Kind == Absent || nv.Kind == Unchanged) {
			t.Fatalf("column %d: known value of kind %q / %q", i, byte(ov.Kind), byte(nv.Kind))
		}
		if c.Op != OpUpdate && known {
			t.Fatalf("column %d: Changed known for %v", i, c.Op)
		}
		if ch && !known {
			t.Fatalf("column %d: changed but unknown", i)
		}
		if c.Op == OpUpdate && c.New.Values[i].Kind == Unchanged && (ch || !known) {
			t.Fatalf("column %d: unchanged TOAST reported as %v, %v", i, ch, known)
		}
		if c.Op == OpUpdate && oldKnown && newKnown && c.New.Values[i].Kind != Unchanged {
			want := ov.Kind != nv.Kind || !bytes.Equal(ov.Data, nv.Data)
			if !known || ch != want {
				t.Fatalf("column %d: Changed = %v, %v with old %v new %v", i, ch, known, ov, nv)
			}
		}
	}
}
