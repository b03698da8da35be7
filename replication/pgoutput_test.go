package replication

import (
	"encoding/binary"
	"errors"
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

func TestDecodeErrors(t *testing.T) {
	d := newDecoder(nil)
	decodeAll(t, d, relationMsg(7))
	for name, b := range map[string]msg{
		"unknown relation":      m('I').u32(8).u8('N').cols(0),
		"unknown type":          m('Z'),
		"empty":                 msg{},
		"wrong column count":    m('I').u32(7).u8('N').cols(2).text("1").text("2"),
		"huge text length":      m('I').u32(7).u8('N').cols(3).u8('t').u32(0xfffffff0),
		"bad tuple kind":        m('I').u32(7).u8('X').cols(3),
		"bad column kind":       m('I').u32(7).u8('N').cols(3).u8('q'),
		"truncate unknown rel":  m('T').u32(1).u8(0).u32(99),
		"truncate huge count":   m('T').u32(0xffffffff).u8(0),
		"relation huge columns": m('R').u32(1).str("s").str("t").u8('d').u16(0xffff),
	} {
		if _, err := d.decode(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// Every proper prefix of every valid message is an error, never a panic.
func TestDecodeTruncatedMessages(t *testing.T) {
	for _, full := range validMessages() {
		for n := 0; n < len(full); n++ {
			d := newDecoder(nil)
			decodeAll(t, d, relationMsg(7))
			if _, err := d.decode(full[:n]); !errors.Is(err, ErrMalformed) {
				if full[0] == 'Y' || full[0] == 'O' || full[0] == 'M' {
					continue // ignored messages are not parsed
				}
				t.Errorf("prefix %d of %q: err = %v", n, full[0], err)
			}
		}
	}
}

func str(v Value, ok bool) string {
	if !ok {
		return "<unknown>"
	}
	return string(v.Data)
}

func FuzzDecode(f *testing.F) {
	for _, b := range validMessages() {
		f.Add([]byte(b))
	}
	// A sequence: length-prefixed messages, so Relation-then-change
	// sequences are explored.
	var seq []byte
	for _, b := range []msg{relationMsg(7), validMessages()[5], validMessages()[9]} {
		seq = binary.BigEndian.AppendUint16(seq, uint16(len(b)))
		seq = append(seq, b...)
	}
	f.Add(seq)
	f.Fuzz(func(t *testing.T, data []byte) {
		d := newDecoder(map[string][]string{"public.runs": {"id"}})
		try := func(b []byte) {
			ev, err := d.decode(b)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("error not ErrMalformed: %v", err)
				}
				return
			}
			if c := ev.change; c != nil {
				for i := range c.Rel.Columns {
					c.OldValue(i)
					c.NewValue(i)
					if c.Op == OpUpdate {
						c.Changed(i)
					}
				}
			}
		}
		try(data)
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
