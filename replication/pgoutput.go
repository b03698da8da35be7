package replication

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// pgoutput message types (protocol v1). See "Logical Replication Message
// Formats" in the PostgreSQL documentation.
const (
	msgBegin    = 'B'
	msgCommit   = 'C'
	msgOrigin   = 'O'
	msgRelation = 'R'
	msgType     = 'Y'
	msgInsert   = 'I'
	msgUpdate   = 'U'
	msgDelete   = 'D'
	msgTruncate = 'T'
	msgMessage  = 'M'

	// Protocol v2 streaming of in-progress transactions.
	msgStreamStart  = 'S'
	msgStreamStop   = 'E'
	msgStreamCommit = 'c'
	msgStreamAbort  = 'A'
)

// reader walks a pgoutput message with bounds checks: pglogrepl's decoders
// index without checking and panic on a short message.
type reader struct {
	buf []byte
	off int
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s at offset %d of %d", ErrMalformed, what, r.off, len(r.buf))
	}
}

func (r *reader) byte1(what string) byte {
	if r.err != nil || r.off+1 > len(r.buf) {
		r.fail(what)
		return 0
	}
	b := r.buf[r.off]
	r.off++
	return b
}

func (r *reader) uint16(what string) uint16 {
	if r.err != nil || r.off+2 > len(r.buf) {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf[r.off:])
	r.off += 2
	return v
}

func (r *reader) uint32(what string) uint32 {
	if r.err != nil || r.off+4 > len(r.buf) {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf[r.off:])
	r.off += 4
	return v
}

func (r *reader) uint64(what string) uint64 {
	if r.err != nil || r.off+8 > len(r.buf) {
		r.fail(what)
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf[r.off:])
	r.off += 8
	return v
}

func (r *reader) lsn(what string) pglogrepl.LSN { return pglogrepl.LSN(r.uint64(what)) }

// pgEpoch is 2000-01-01, the origin of PostgreSQL timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *reader) time(what string) time.Time {
	us := int64(r.uint64(what))
	return pgEpoch.Add(time.Duration(us) * time.Microsecond)
}

// cstring reads a NUL-terminated string.
func (r *reader) cstring(what string) string {
	if r.err != nil {
		return ""
	}
	for i := r.off; i < len(r.buf); i++ {
		if r.buf[i] == 0 {
			s := string(r.buf[r.off:i])
			r.off = i + 1
			return s
		}
	}
	r.fail(what + " (unterminated string)")
	return ""
}

// tuple reads TupleData into dst, reusing its capacity. Values point into the
// message buffer.
func (r *reader) tuple(dst []Value, want int) []Value {
	n := int(r.uint16("tuple column count"))
	if r.err != nil {
		return dst[:0]
	}
	if n != want {
		r.err = fmt.Errorf("%w: tuple has %d columns, relation has %d", ErrMalformed, n, want)
		return dst[:0]
	}
	dst = dst[:0]
	for i := 0; i < n; i++ {
		k := Kind(r.byte1("tuple column kind"))
		switch k {
		case Null, Unchanged:
			dst = append(dst, Value{Kind: k})
		case Text, Binary:
			l := int(r.uint32("tuple value length"))
			if r.err != nil {
				return dst
			}
			if l < 0 || r.off+l > len(r.buf) {
				r.fail("tuple value")
				return dst
			}
			dst = append(dst, Value{Kind: k, Data: r.buf[r.off : r.off+l : r.off+l]})
			r.off += l
		default:
			if r.err == nil {
				r.err = fmt.Errorf("%w: unknown tuple column kind %q", ErrMalformed, byte(k))
			}
			return dst
		}
	}
	return dst
}

// decoder turns pgoutput messages into Begin, Commit and Change values. It
// keeps the relation cache and reuses one Change and its value slices, so
// decoding a row allocates nothing. Not safe for concurrent use.
type decoder struct {
	rels   map[uint32]*Relation
	begin  Begin
	commit Commit
	change Change
	oldBuf []Value
	newBuf []Value
	// primaryKeys maps "schema.table" to primary key column names, from the
	// catalog; attached to relations as they arrive.
	primaryKeys map[string][]string
	// inStream is set between Stream Start and Stream Stop, where every
	// data message carries the (sub)transaction id after its type.
	inStream bool
	// relmap places relations in partition trees; nil: each relation
	// answers to its own name.
	relmap *relationMap
}

func newDecoder(primaryKeys map[string][]string) *decoder {
	return &decoder{rels: make(map[uint32]*Relation), primaryKeys: primaryKeys}
}

// event is what one pgoutput message decoded to. Exactly one of the pointer
// fields is set, or none for a message that carries nothing for us.
type event struct {
	begin    *Begin    // valid until the next decode
	commit   *Commit   // valid until the next decode
	change   *Change   // valid until the next decode
	truncate []*Change // one per relation
	relation *Relation

	// Protocol v2 streaming.
	xid          uint32 // of a change or truncate inside a stream block
	streamStart  *streamStart
	streamStop   bool
	streamCommit *Commit // with Xid set
	streamAbort  *streamAbort
}

type streamStart struct {
	Xid   uint32
	First bool
}

type streamAbort struct {
	Xid, SubXid uint32
}

func (d *decoder) decode(msg []byte) (ev event, err error) {
	r := reader{buf: msg}
	t := r.byte1("message type")
	if d.inStream {
		switch t {
		case msgRelation, msgType, msgInsert, msgUpdate, msgDelete, msgTruncate, msgMessage, msgOrigin:
			ev.xid = r.uint32("stream xid")
		}
	}
	switch t {
	case msgStreamStart:
		if d.inStream {
			return ev, fmt.Errorf("%w: Stream Start inside a stream", ErrMalformed)
		}
		st := &streamStart{Xid: r.uint32("stream start xid"), First: r.byte1("stream start first") == 1}
		if r.err == nil {
			d.inStream = true
			ev.streamStart = st
		}
	case msgStreamStop:
		if !d.inStream {
			return ev, fmt.Errorf("%w: Stream Stop outside a stream", ErrMalformed)
		}
		d.inStream = false
		ev.streamStop = true
	case msgStreamCommit:
		c := &Commit{}
		c.Xid = r.uint32("stream commit xid")
		r.byte1("stream commit flags")
		c.CommitLSN = r.lsn("stream commit lsn")
		c.EndLSN = r.lsn("stream commit end lsn")
		c.CommitTime = r.time("stream commit time")
		ev.streamCommit = c
	case msgStreamAbort:
		a := &streamAbort{Xid: r.uint32("stream abort xid"), SubXid: r.uint32("stream abort subxid")}
		ev.streamAbort = a
	case msgBegin:
		b := &d.begin
		*b = Begin{}
		b.FinalLSN = r.lsn("begin final lsn")
		b.CommitTime = r.time("begin commit time")
		b.Xid = r.uint32("begin xid")
		ev.begin = b
	case msgCommit:
		c := &d.commit
		*c = Commit{}
		r.byte1("commit flags")
		c.CommitLSN = r.lsn("commit lsn")
		c.EndLSN = r.lsn("commit end lsn")
		c.CommitTime = r.time("commit time")
		ev.commit = c
	case msgRelation:
		rel := &Relation{}
		rel.ID = r.uint32("relation id")
		rel.Namespace = r.cstring("relation namespace")
		if rel.Namespace == "" {
			rel.Namespace = "pg_catalog"
		}
		rel.Name = r.cstring("relation name")
		rel.ReplicaIdentity = r.byte1("relation replica identity")
		n := int(r.uint16("relation column count"))
		if r.err == nil {
			// Each column takes at least 10 bytes: refuse counts the message cannot hold.
			if n*10 > len(msg)-r.off {
				r.fail("relation columns")
			} else {
				rel.Columns = make([]Column, n)
			}
		}
		for i := 0; i < n && r.err == nil; i++ {
			flags := r.byte1("column flags")
			rel.Columns[i] = Column{Identity: flags&1 != 0, Name: r.cstring("column name"), TypeOID: r.uint32("column type")}
			r.uint32("column type modifier")
		}
		if r.err == nil {
			if err := d.place(rel); err != nil {
				return event{}, err
			}
			d.rels[rel.ID] = rel
			ev.relation = rel
		}
	case msgInsert, msgUpdate, msgDelete:
		ch := &d.change
		*ch = Change{}
		relID := r.uint32("relation id")
		rel := d.rels[relID]
		if r.err == nil && rel == nil {
			return ev, fmt.Errorf("%w: change for relation id %d before its Relation message", ErrMalformed, relID)
		}
		ch.Rel = rel
		n := 0
		if rel != nil {
			n = len(rel.Columns)
		}
		switch t {
		case msgInsert:
			ch.Op = OpInsert
			if k := r.byte1("insert tuple kind"); r.err == nil && k != 'N' {
				return ev, fmt.Errorf("%w: insert tuple kind %q", ErrMalformed, k)
			}
			d.newBuf = r.tuple(d.newBuf, n)
			ch.New = Tuple{Kind: NewTuple, Values: d.newBuf}
		case msgUpdate:
			ch.Op = OpUpdate
			k := r.byte1("update tuple kind")
			if k == 'K' || k == 'O' {
				d.oldBuf = r.tuple(d.oldBuf, n)
				ch.Old = Tuple{Kind: TupleKind(k), Values: d.oldBuf}
				k = r.byte1("update new tuple kind")
			}
			if r.err == nil && k != 'N' {
				return ev, fmt.Errorf("%w: update tuple kind %q", ErrMalformed, k)
			}
			d.newBuf = r.tuple(d.newBuf, n)
			ch.New = Tuple{Kind: NewTuple, Values: d.newBuf}
		case msgDelete:
			ch.Op = OpDelete
			k := r.byte1("delete tuple kind")
			if r.err == nil && k != 'K' && k != 'O' {
				return ev, fmt.Errorf("%w: delete tuple kind %q", ErrMalformed, k)
			}
			d.oldBuf = r.tuple(d.oldBuf, n)
			ch.Old = Tuple{Kind: TupleKind(k), Values: d.oldBuf}
		}
		ev.change = ch
	case msgTruncate:
		n := int(r.uint32("truncate relation count"))
		opts := r.byte1("truncate options")
		if r.err == nil && n*4 > len(msg)-r.off {
			r.fail("truncate relation ids")
		}
		for i := 0; i < n && r.err == nil; i++ {
			id := r.uint32("truncate relation id")
			rel := d.rels[id]
			if r.err == nil && rel == nil {
				return ev, fmt.Errorf("%w: truncate of relation id %d before its Relation message", ErrMalformed, id)
			}
			ev.truncate = append(ev.truncate, &Change{Op: OpTruncate, Rel: rel, TruncateOptions: opts})
		}
	case msgType, msgOrigin, msgMessage:
		// Nothing to act on: type names are not needed for text values,
		// origins do not change what must be invalidated, and logical
		// messages are not requested.
	default:
		if r.err == nil {
			return ev, fmt.Errorf("%w: unknown message type %q", ErrMalformed, t)
		}
	}
	if r.err != nil {
		return event{}, r.err
	}
	return ev, nil
}

func primaryKeyIndexes(rel *Relation, names []string) []int {
	if len(names) == 0 {
		return nil
	}
	idx := make([]int, 0, len(names))
	for _, n := range names {
		i := rel.ColumnIndex(n)
		if i < 0 {
			return nil
		}
		idx = append(idx, i)
	}
	return idx
}
