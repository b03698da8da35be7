package replication

import (
	"fmt"
	"slices"
)

// assembler turns decoded pgoutput events into committed transactions. It
// is a pure state machine: Begin, changes, Commit, and the protocol v2
// stream messages go in; whole committed transactions come out. It does no
// I/O and keeps no clock, so every interleaving the server can produce is a
// unit test away. Not safe for concurrent use.
type assembler[T Tx[T]] struct {
	begin func(Begin) T
	// maxParts bounds the parts a streamed transaction keeps apart; past
	// it the oldest are folded into one (see streamedTx).
	maxParts int

	inTx bool
	cur  Begin
	tx   T

	// Streamed transactions in progress, by top-level xid, and the one
	// whose stream block is open.
	streams map[uint32]*streamedTx[T]
	stream  *streamedTx[T]
}

// defaultMaxParts is how many parts of a streamed transaction are kept
// apart, so that a rolled-back subtransaction can be dropped exactly. A
// transaction with more subtransactions than this (a PL/pgSQL loop with an
// EXCEPTION block makes one per row) folds its oldest parts together: its
// memory stays bounded by its plan, not by its subtransaction count.
const defaultMaxParts = 64

func newAssembler[T Tx[T]](begin func(Begin) T) *assembler[T] {
	return &assembler[T]{begin: begin, maxParts: defaultMaxParts}
}

// streamedTx is an in-progress transaction the server streams in blocks
// (protocol v2). Every part is a Part of root, so all of the transaction is
// evaluated under the rules it began with. Its changes go to one part per
// run of a (sub)transaction's changes, so that a subtransaction's abort
// drops exactly its parts; parts folded into root can no longer be dropped,
// and an abort that names one of them makes the transaction inexact.
type streamedTx[T Tx[T]] struct {
	xid     uint32
	root    T
	folded  []uint32 // sorted subtransaction ids whose changes are in root
	parts   []streamPart[T]
	inexact bool
}

type streamPart[T any] struct {
	subxid uint32
	tx     T
}

// open reports whether a transaction has begun and not ended: nothing
// received may then be confirmed on the strength of a keepalive.
func (a *assembler[T]) open() bool { return a.inTx || len(a.streams) > 0 }

// reset forgets every transaction in progress (a new session: the server
// sends them again from the start).
func (a *assembler[T]) reset() {
	var zero T
	a.inTx, a.tx = false, zero
	a.streams, a.stream = nil, nil
}

// feed takes one decoded event. done is set when ev completes a transaction,
// which is then returned.
func (a *assembler[T]) feed(ev *event) (c Committed[T], done bool, err error) {
	switch {
	case ev.streamStart != nil:
		a.streamStart(ev.streamStart.Xid)
	case ev.streamStop:
		a.stream = nil
	case a.stream != nil && (ev.change != nil || ev.truncate != nil):
		tx := a.stream.partFor(ev.xid, a.maxParts)
		if ev.change != nil {
			tx.Add(ev.change)
		}
		for _, ch := range ev.truncate {
			tx.Add(ch)
		}
	case ev.streamAbort != nil:
		a.streamAbort(ev.streamAbort.Xid, ev.streamAbort.SubXid)
	case ev.streamCommit != nil:
		return a.streamCommit(ev.streamCommit), true, nil
	case ev.begin != nil:
		if a.inTx {
			return c, false, fmt.Errorf("%w: Begin of xid %d inside xid %d", ErrMalformed, ev.begin.Xid, a.cur.Xid)
		}
		a.inTx, a.cur = true, *ev.begin
		a.tx = a.begin(a.cur)
	case ev.commit != nil:
		if !a.inTx {
			return c, false, fmt.Errorf("%w: Commit outside a transaction", ErrMalformed)
		}
		c = Committed[T]{Commit: *ev.commit, Tx: a.tx}
		c.Xid = a.cur.Xid
		var zero T
		a.inTx, a.tx = false, zero
		return c, true, nil
	case ev.change != nil:
		if !a.inTx {
			return c, false, fmt.Errorf("%w: change outside a transaction", ErrMalformed)
		}
		a.tx.Add(ev.change)
	case ev.truncate != nil:
		if !a.inTx {
			return c, false, fmt.Errorf("%w: truncate outside a transaction", ErrMalformed)
		}
		for _, ch := range ev.truncate {
			a.tx.Add(ch)
		}
	}
	return c, false, nil
}

func (a *assembler[T]) streamStart(xid uint32) {
	if a.streams == nil {
		a.streams = make(map[uint32]*streamedTx[T])
	}
	st := a.streams[xid]
	if st == nil {
		// The rules of the transaction's first block hold for all of it.
		st = &streamedTx[T]{xid: xid, root: a.begin(Begin{Xid: xid})}
		a.streams[xid] = st
	}
	a.stream = st
}

func (a *assembler[T]) streamAbort(xid, subxid uint32) {
	st := a.streams[xid]
	if st == nil {
		return
	}
	if subxid == xid {
		delete(a.streams, xid)
		if a.stream == st {
			a.stream = nil
		}
		return
	}
	st.abort(subxid)
}

func (a *assembler[T]) streamCommit(c *Commit) Committed[T] {
	st := a.streams[c.Xid]
	delete(a.streams, c.Xid)
	if st == nil {
		// Every block of it was empty for this publication.
		return Committed[T]{Commit: *c, Tx: a.begin(Begin{Xid: c.Xid, FinalLSN: c.CommitLSN, CommitTime: c.CommitTime})}
	}
	for _, p := range st.parts {
		st.root.Merge(p.tx)
	}
	return Committed[T]{Commit: *c, Tx: st.root, Inexact: st.inexact}
}

// partFor returns the part that a change of subxid goes to: the last one
// when it belongs to the same subtransaction, a new one otherwise.
func (st *streamedTx[T]) partFor(subxid uint32, maxParts int) T {
	if n := len(st.parts); n > 0 && st.parts[n-1].subxid == subxid {
		return st.parts[n-1].tx
	}
	if len(st.parts) >= maxParts {
		st.fold(len(st.parts) / 2)
	}
	st.parts = append(st.parts, streamPart[T]{subxid: subxid, tx: st.root.Part()})
	return st.parts[len(st.parts)-1].tx
}

// fold merges the oldest n parts into root, in order, and remembers their
// subtransactions.
func (st *streamedTx[T]) fold(n int) {
	for _, p := range st.parts[:n] {
		st.root.Merge(p.tx)
		if i, found := slices.BinarySearch(st.folded, p.subxid); !found {
			st.folded = slices.Insert(st.folded, i, p.subxid)
		}
	}
	rest := copy(st.parts, st.parts[n:])
	clear(st.parts[rest:])
	st.parts = st.parts[:rest]
}

// abort drops the parts of a rolled-back subtransaction. Its changes folded
// into root cannot be taken out: the transaction is then inexact.
func (st *streamedTx[T]) abort(subxid uint32) {
	if _, found := slices.BinarySearch(st.folded, subxid); found {
		st.inexact = true
	}
	kept := st.parts[:0]
	for _, p := range st.parts {
		if p.subxid != subxid {
			kept = append(kept, p)
		} else {
			p.tx.Discard()
		}
	}
	clear(st.parts[len(kept):])
	st.parts = kept
}
