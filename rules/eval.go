package rules

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cdcd/cdcd/replication"
	"github.com/jackc/pglogrepl"
)

// Reasons a section is invalidated by pattern rather than by exact keys.
// They label cdcd_pattern_invalidations_total.
const (
	ReasonTruncate      = "truncate"        // a truncate names no rows
	ReasonOldRowUnknown = "old_row_unknown" // UPDATE/DELETE without the old value (replica identity)
	ReasonValueUnknown  = "value_unknown"   // unchanged TOAST value with no old row to read it from
	ReasonMissingColumn = "missing_column"  // the relation has no such column
	ReasonEscalated     = "escalated"       // too many distinct keys in one transaction
	ReasonGap           = "gap"             // cdcd cannot prove it saw every change
)

// DefaultMaxTxKeys is how many distinct keys of one section a transaction
// collects before the section escalates to its pattern.
const DefaultMaxTxKeys = 100_000

// Row sources of an exact key.
const (
	FromNew     = "new"
	FromOld     = "old"
	FromLiteral = "literal"
)

// Key is one exact key to delete.
type Key struct {
	Key     string `json:"key"`
	Section string `json:"section"`
	Rule    string `json:"rule"` // the rule or invariant that produced it first
	From    string `json:"from"` // FromNew, FromOld or FromLiteral
}

// Pattern is a section's key pattern to delete with SCAN + UNLINK.
type Pattern struct {
	Pattern string `json:"pattern"`
	Section string `json:"section"`
	Rule    string `json:"rule"`
	Reason  string `json:"reason"`
}

// Revision is a revision key set to the commit LSN. With IsPattern, Key is a
// SCAN pattern and every existing key matching it is set.
type Revision struct {
	Key       string `json:"key"`
	Section   string `json:"section"`
	IsPattern bool   `json:"is_pattern,omitempty"`
}

// Message is one channel message.
type Message struct {
	Channel string
	Section string
	Payload []byte
}

// ColumnValue is a column's text value; Null marks SQL NULL.
type ColumnValue struct {
	Column string  `json:"column"`
	Value  *string `json:"value"`
}

// ColumnChange is a column's value before and after an update.
type ColumnChange struct {
	Column string  `json:"column"`
	Old    *string `json:"old"`
	New    *string `json:"new"`
}

// Violation is a broken invariant.
type Violation struct {
	Invariant  string         `json:"invariant"`
	Severity   string         `json:"severity"`
	Message    string         `json:"message"`
	Table      string         `json:"table"`
	PrimaryKey []ColumnValue  `json:"primary_key"`
	Changed    []ColumnChange `json:"changed"`
	Required   []ColumnChange `json:"required"`
	LSN        string         `json:"lsn"`
	Xid        uint32         `json:"xid"`
	CommitTime time.Time      `json:"commit_time"`
}

// Plan is what one committed transaction requires of the sinks.
type Plan struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN
	CommitTime time.Time
	Changes    int

	Keys       []Key
	Patterns   []Pattern
	Revisions  []Revision
	Messages   []Message
	Violations []Violation
	// MissingColumns lists the columns the rules name that a changed
	// table lacks (a schema change the rules did not follow).
	MissingColumns []MissingColumn

	// Inexact marks a plan that may hold changes of a rolled-back
	// subtransaction (see replication.Committed): its invalidations are
	// wider than needed, and a violation in it may be a false alarm.
	Inexact bool
	// Gap marks the plan of a gap: every section, with its revisions set
	// to the plan's position even where that is lower than the value they
	// hold (the server, and with it the LSN sequence, may have changed).
	Gap bool
}

// Empty reports whether the plan asks nothing of any sink.
func (p *Plan) Empty() bool {
	return len(p.Keys) == 0 && len(p.Patterns) == 0 && len(p.Revisions) == 0 &&
		len(p.Messages) == 0 && len(p.Violations) == 0
}

// Builder accumulates one transaction's plan as its changes arrive. It keeps
// keys, not rows. It implements replication.Tx. Not safe for concurrent use.
type Builder struct {
	rules *Rules
	xid   uint32

	lastRel  *replication.Relation
	lastBind *binding

	// Keys, revisions and sections touched are found by scanning their
	// slices while there are few (most transactions make a handful); past
	// smallSet entries they are indexed in these maps.
	keyIndex     map[string]map[string]struct{} // section name -> keys collected
	escalated    map[*section]bool              // sections past the key limit
	sectionRevs  map[string]int                 // section name -> exact revision keys
	revEscalated map[*section]bool              // sections past the limit for revisions
	keys         []Key
	patterns     map[string]int // section+pattern -> index in pats
	pats         []Pattern
	revIndex     map[string]struct{} // revision key, or "\x00" + revision pattern
	revs         []Revision
	touched      []*section // sections invalidated, in first-touch order
	touchedSet   map[*section]struct{}
	violations   []Violation
	missing      []MissingColumn
	rows         map[string]*rowState // invariant + row key -> state
	rowOrder     []*rowState
	changes      int

	plan Plan
	buf  []byte
	vals [][]byte
	// Inline storage for the first few of each, enough for most
	// transactions: a slice starts on them when it gets its first element.
	bufArr     [96]byte
	valsArr    [4][]byte
	keysArr    [2]Key
	revsArr    [1]Revision
	touchedArr [2]*section
	msgsArr    [1]Message
}

// smallSet is how many entries a Builder scans before it indexes them.
const smallSet = 8

var _ replication.Tx[*Builder] = (*Builder)(nil)

// Begin starts the plan of a transaction under these rules. All of the
// transaction is evaluated under the rules it began with.
func (rs *Rules) Begin(b replication.Begin) *Builder {
	bd := &Builder{rules: rs, xid: b.Xid}
	bd.buf, bd.vals = bd.bufArr[:0], bd.valsArr[:0]
	return bd
}

// Part returns an empty Builder for another part of the same transaction,
// under the same rules.
func (b *Builder) Part() *Builder { return b.rules.Begin(replication.Begin{Xid: b.xid}) }

// Add evaluates one change.
func (b *Builder) Add(c *replication.Change) {
	b.changes++
	bind := b.lastBind
	if c.Rel != b.lastRel {
		bind = b.rules.bind(c.Rel)
		b.lastRel, b.lastBind = c.Rel, bind
		for _, m := range bind.missing {
			if !slices.Contains(b.missing, m) {
				b.missing = append(b.missing, m)
			}
		}
	}
	if len(bind.rules) == 0 && len(bind.invariants) == 0 {
		return
	}
	for i := range bind.rules {
		r := &bind.rules[i]
		if !r.ops[c.Op] || !r.matches(c) {
			continue
		}
		for _, s := range r.sections {
			b.invalidate(s, r.name, c, bind)
		}
	}
	for i := range bind.invariants {
		inv := &bind.invariants[i]
		switch c.Op {
		case replication.OpUpdate:
			b.track(inv, c, bind)
		case replication.OpInsert:
			b.forget(inv, c, c.NewValue)
		case replication.OpDelete:
			b.forget(inv, c, c.OldValue)
		case replication.OpTruncate:
			for _, st := range b.rowOrder {
				if st.inv == inv {
					st.skip = true
				}
			}
		}
	}
}

// matches applies the column filter: an UPDATE matches when a listed column
// changed, or when that cannot be told (no old row) — when in doubt,
// invalidate.
func (r *boundRule) matches(c *replication.Change) bool {
	if c.Op != replication.OpUpdate || len(r.columns) == 0 {
		return true
	}
	for _, i := range r.columns {
		if i < 0 {
			return true
		}
		if changed, known := c.Changed(i); changed || !known {
			return true
		}
	}
	return false
}

func (b *Builder) touch(s *section) {
	if b.touchedSet != nil {
		if _, ok := b.touchedSet[s]; !ok {
			b.touchedSet[s] = struct{}{}
			b.touched = append(b.touched, s)
		}
		return
	}
	if slices.Contains(b.touched, s) {
		return
	}
	if b.touched == nil {
		b.touched = b.touchedArr[:0]
	}
	b.touched = append(b.touched, s)
	if len(b.touched) > smallSet {
		b.touchedSet = make(map[*section]struct{}, 2*len(b.touched))
		for _, t := range b.touched {
			b.touchedSet[t] = struct{}{}
		}
	}
}

func (b *Builder) invalidate(s *section, by string, c *replication.Change, bind *binding) {
	b.touch(s)
	for _, t := range s.keys {
		b.resolve(t, bind.templates[t], s, by, c, false)
	}
	if s.revision != nil {
		b.resolve(s.revision, bind.templates[s.revision], s, by, c, true)
	}
}

// resolve turns one template into exact keys from the rows the change
// carries, or into the template's pattern when a value is unknown.
func (b *Builder) resolve(t *Template, cols []int, s *section, by string, c *replication.Change, revision bool) {
	if t.IsLiteral() {
		b.add(t.Literal(), s, by, FromLiteral, revision)
		return
	}
	if c.Op == replication.OpTruncate {
		b.pattern(t, s, by, ReasonTruncate, revision)
		return
	}
	for _, i := range cols {
		if i < 0 {
			b.pattern(t, s, by, ReasonMissingColumn, revision)
			return
		}
	}
	useNew := c.Op == replication.OpInsert || c.Op == replication.OpUpdate
	useOld := c.Op == replication.OpDelete || c.Op == replication.OpUpdate
	var newKey string
	if useNew {
		key, ok := b.render(t, cols, c.NewValue)
		if !ok {
			b.pattern(t, s, by, ReasonValueUnknown, revision)
			return
		}
		newKey = key
		b.add(key, s, by, FromNew, revision)
	}
	if useOld {
		if useNew && b.unchanged(cols, c) {
			return // the old key is the new key
		}
		key, ok := b.render(t, cols, c.OldValue)
		if !ok {
			b.pattern(t, s, by, ReasonOldRowUnknown, revision)
			return
		}
		if key != newKey {
			b.add(key, s, by, FromOld, revision)
		}
	}
}

// unchanged reports whether every column is known not to have changed.
func (b *Builder) unchanged(cols []int, c *replication.Change) bool {
	for _, i := range cols {
		if changed, known := c.Changed(i); changed || !known {
			return false
		}
	}
	return true
}

// render renders t with values from get, into a fresh string.
func (b *Builder) render(t *Template, cols []int, get func(int) (replication.Value, bool)) (string, bool) {
	b.vals = b.vals[:0]
	for _, i := range cols {
		v, ok := get(i)
		if !ok {
			return "", false
		}
		// NULL renders as the empty string.
		b.vals = append(b.vals, v.Data)
	}
	b.buf = t.Render(b.buf[:0], b.vals)
	return string(b.buf), true
}

func (b *Builder) add(key string, s *section, by, from string, revision bool) {
	if revision {
		if b.revEscalated[s] || b.hasRevision(key, false) {
			return
		}
		if b.revisionCount(s) >= b.rules.maxKeys() {
			b.escalateRevisions(s)
			return
		}
		b.appendRevision(Revision{Key: key, Section: s.name})
		return
	}
	if b.escalated[s] {
		return
	}
	// Keys are unique per section: a key two sections share is announced on
	// both sections' channels (the sink still unlinks it once).
	if b.keyIndex == nil {
		n := 0
		for i := range b.keys {
			if b.keys[i].Section == s.name {
				if b.keys[i].Key == key {
					return
				}
				n++
			}
		}
		if n >= b.rules.maxKeys() {
			b.escalate(s, by)
			return
		}
		if b.keys == nil {
			b.keys = b.keysArr[:0]
		}
		b.keys = append(b.keys, Key{Key: key, Section: s.name, Rule: by, From: from})
		if len(b.keys) > smallSet {
			b.keyIndex = make(map[string]map[string]struct{})
			for _, k := range b.keys {
				b.indexKey(k)
			}
		}
		return
	}
	index := b.keyIndex[s.name]
	if _, ok := index[key]; ok {
		return
	}
	if len(index) >= b.rules.maxKeys() {
		b.escalate(s, by)
		return
	}
	k := Key{Key: key, Section: s.name, Rule: by, From: from}
	b.keys = append(b.keys, k)
	b.indexKey(k)
}

func (b *Builder) indexKey(k Key) {
	index := b.keyIndex[k.Section]
	if index == nil {
		index = make(map[string]struct{})
		b.keyIndex[k.Section] = index
	}
	index[k.Key] = struct{}{}
}

// hasRevision reports whether the transaction sets the revision key (or,
// with pattern, the revision pattern) already.
func (b *Builder) hasRevision(key string, pattern bool) bool {
	if b.revIndex != nil {
		_, ok := b.revIndex[revisionID(key, pattern)]
		return ok
	}
	for i := range b.revs {
		if b.revs[i].IsPattern == pattern && b.revs[i].Key == key {
			return true
		}
	}
	return false
}

func revisionID(key string, pattern bool) string {
	if pattern {
		return "\x00" + key
	}
	return key
}

// revisionCount returns how many exact revision keys of s the transaction
// sets.
func (b *Builder) revisionCount(s *section) int {
	if b.sectionRevs != nil {
		return b.sectionRevs[s.name]
	}
	n := 0
	for i := range b.revs {
		if b.revs[i].Section == s.name && !b.revs[i].IsPattern {
			n++
		}
	}
	return n
}

func (b *Builder) appendRevision(r Revision) {
	if b.revs == nil {
		b.revs = b.revsArr[:0]
	}
	b.revs = append(b.revs, r)
	if b.revIndex == nil {
		if len(b.revs) <= smallSet {
			return
		}
		b.revIndex = make(map[string]struct{}, 2*len(b.revs))
		b.sectionRevs = make(map[string]int)
		for _, r := range b.revs[:len(b.revs)-1] {
			b.indexRevision(r)
		}
	}
	b.indexRevision(r)
}

func (b *Builder) indexRevision(r Revision) {
	b.revIndex[revisionID(r.Key, r.IsPattern)] = struct{}{}
	if !r.IsPattern {
		b.sectionRevs[r.Section]++
	}
}

// escalateRevisions replaces a section's collected revision keys by the
// revision template's pattern, as escalate does for keys.
func (b *Builder) escalateRevisions(s *section) {
	if b.revEscalated == nil {
		b.revEscalated = make(map[*section]bool)
	}
	b.revEscalated[s] = true
	kept := b.revs[:0]
	for _, r := range b.revs {
		if r.Section == s.name && !r.IsPattern {
			delete(b.revIndex, r.Key)
			continue
		}
		kept = append(kept, r)
	}
	clear(b.revs[len(kept):])
	b.revs = kept
	delete(b.sectionRevs, s.name)
	if s.revision != nil && !s.revision.IsLiteral() {
		if p := s.revision.Pattern(); !b.hasRevision(p, true) {
			b.appendRevision(Revision{Key: p, Section: s.name, IsPattern: true})
		}
	}
}

// escalate replaces a section's collected keys by its key patterns: memory
// per transaction stays bounded however many rows it touches.
func (b *Builder) escalate(s *section, by string) {
	if b.escalated == nil {
		b.escalated = make(map[*section]bool)
	}
	b.escalated[s] = true
	kept := b.keys[:0]
	for _, k := range b.keys {
		if k.Section == s.name && k.From != FromLiteral {
			delete(b.keyIndex[s.name], k.Key)
			continue
		}
		kept = append(kept, k)
	}
	clear(b.keys[len(kept):])
	b.keys = kept
	for _, t := range s.keys {
		if t.IsLiteral() {
			continue
		}
		b.pattern(t, s, by, ReasonEscalated, false)
	}
}

func (b *Builder) pattern(t *Template, s *section, by, reason string, revision bool) {
	p := t.Pattern()
	if revision {
		if !b.hasRevision(p, true) {
			b.appendRevision(Revision{Key: p, Section: s.name, IsPattern: true})
		}
		return
	}
	if b.patterns == nil {
		b.patterns = make(map[string]int)
	}
	id := s.name + "\x00" + p
	if _, ok := b.patterns[id]; ok {
		return
	}
	b.patterns[id] = len(b.pats)
	b.pats = append(b.pats, Pattern{Pattern: p, Section: s.name, Rule: by, Reason: reason})
}

// Invariants are checked per transaction, not per statement: a row's state
// before the transaction is compared with its state at commit. An
// application that changes the coefficients and then the version in two
// UPDATEs of one transaction keeps the invariant; one that changes a value
// and changes it back never broke it. Only the watched columns of rows an
// invariant's table saw updated are kept.

// rowState is one row's watched columns before the transaction and now.
type rowState struct {
	inv           *boundInvariant
	table         string
	before, after []watched // when_changed columns, then require_changed
	pk            []ColumnValue
	known         bool   // every watched value could be read
	skip          bool   // inserted or deleted in the transaction
	firstKey      string // the row's key when the transaction first saw it
}

type watched struct {
	val     *string
	present bool // the relation has the column
}

// track records an UPDATE for the invariants of its table.
func (b *Builder) track(inv *boundInvariant, c *replication.Change, bind *binding) {
	oldKey := inv.name + "\x00" + rowKey(c, c.OldValue)
	newKey := inv.name + "\x00" + rowKey(c, c.NewValue)
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	st := b.rows[oldKey]
	if st == nil {
		st = &rowState{inv: inv, table: c.Rel.Table(), known: true, firstKey: oldKey}
		st.before = b.watch(st, inv, c.OldValue)
		b.rowOrder = append(b.rowOrder, st)
	} else {
		delete(b.rows, oldKey)
	}
	st.after = b.watch(st, inv, c.NewValue)
	st.pk = primaryKey(c)
	b.rows[newKey] = st

	// An invariant's sections are invalidated as soon as a watched column
	// changes: deleting keys for a change later completed by a version bump
	// is harmless, keeping them stale is not.
	if len(inv.sections) > 0 {
		for _, i := range inv.when {
			if i < 0 {
				continue
			}
			if ch, known := c.Changed(i); ch || !known {
				for _, s := range inv.sections {
					b.invalidate(s, inv.name, c, bind)
				}
				break
			}
		}
	}
}

// forget marks a row inserted or deleted in the transaction: it has no
// "before" or no "at commit" to compare.
func (b *Builder) forget(inv *boundInvariant, c *replication.Change, get func(int) (replication.Value, bool)) {
	key := inv.name + "\x00" + rowKey(c, get)
	if b.rows == nil {
		b.rows = make(map[string]*rowState)
	}
	if st := b.rows[key]; st != nil {
		st.skip = true
	}
	st := &rowState{inv: inv, skip: true, firstKey: key}
	b.rowOrder = append(b.rowOrder, st)
	b.rows[key] = st
}

func (b *Builder) watch(st *rowState, inv *boundInvariant, get func(int) (replication.Value, bool)) []watched {
	out := make([]watched, 0, len(inv.when)+len(inv.require))
	for _, idx := range [][]int{inv.when, inv.require} {
		for _, i := range idx {
			if i < 0 {
				out = append(out, watched{})
				continue
			}
			v, ok := get(i)
			if !ok {
				st.known = false
			}
			out = append(out, watched{val: text(v, ok), present: true})
		}
	}
	return out
}

// rowKey identifies a row by its primary key (or replica identity) values.
func rowKey(c *replication.Change, get func(int) (replication.Value, bool)) string {
	var sb strings.Builder
	idx := c.Rel.PrimaryKey
	if idx == nil {
		for i, col := range c.Rel.Columns {
			if col.Identity {
				idx = append(idx, i)
			}
		}
	}
	for _, i := range idx {
		v, ok := get(i)
		switch {
		case !ok:
			sb.WriteString("?")
		case v.Kind == replication.Null:
			sb.WriteString("N")
		default:
			sb.WriteString("t")
			sb.WriteString(strconv.Itoa(len(v.Data)))
			sb.WriteByte(':')
			sb.Write(v.Data)
		}
	}
	return sb.String()
}

func sameValue(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

// violations compares each tracked row before and at commit.
func (b *Builder) finishInvariants() {
	for _, st := range b.rowOrder {
		if st.skip || !st.known {
			continue
		}
		inv := st.inv
		var changed []ColumnChange
		for k := range inv.when {
			o, n := st.before[k], st.after[k]
			if o.present && !sameValue(o.val, n.val) {
				changed = append(changed, ColumnChange{Column: inv.whenChanged[k], Old: o.val, New: n.val})
			}
		}
		if len(changed) == 0 {
			continue
		}
		required := make([]ColumnChange, 0, len(inv.require))
		bumped := false
		for k := range inv.require {
			o, n := st.before[len(inv.when)+k], st.after[len(inv.when)+k]
			if !o.present {
				continue
			}
			if !sameValue(o.val, n.val) {
				bumped = true
				break
			}
			required = append(required, ColumnChange{Column: inv.requireChanged[k], Old: o.val, New: n.val})
		}
		if bumped {
			continue
		}
		b.violations = append(b.violations, Violation{
			Invariant:  inv.name,
			Severity:   inv.severity,
			Message:    inv.message,
			Table:      st.table,
			PrimaryKey: st.pk,
			Changed:    changed,
			Required:   required,
			Xid:        b.xid,
		})
	}
}

func text(v replication.Value, ok bool) *string {
	if !ok || v.Kind == replication.Null {
		return nil
	}
	s := string(v.Data)
	return &s
}

// primaryKey returns the row's primary key, or its identity columns when the
// catalog gave no primary key.
func primaryKey(c *replication.Change) []ColumnValue {
	idx := c.Rel.PrimaryKey
	if idx == nil && c.Rel.ReplicaIdentity != replication.IdentityFull {
		for i, col := range c.Rel.Columns {
			if col.Identity {
				idx = append(idx, i)
			}
		}
	}
	out := make([]ColumnValue, 0, len(idx))
	for _, i := range idx {
		v, ok := c.NewValue(i)
		if !ok {
			v, ok = c.OldValue(i)
		}
		out = append(out, ColumnValue{Column: c.Rel.Columns[i].Name, Value: text(v, ok)})
	}
	return out
}

// Plan finishes the transaction's plan. The Builder must not be used after.
func (b *Builder) Plan(c replication.Commit) *Plan {
	b.finishInvariants()
	p := &b.plan
	*p = Plan{
		Xid:            b.xid,
		CommitLSN:      c.CommitLSN,
		EndLSN:         c.EndLSN,
		CommitTime:     c.CommitTime,
		Changes:        b.changes,
		Keys:           b.keys,
		Patterns:       b.pats,
		Revisions:      b.revs,
		Violations:     b.violations,
		MissingColumns: b.missing,
	}
	if len(p.Violations) > 0 {
		lsn := c.CommitLSN.String()
		for i := range p.Violations {
			p.Violations[i].LSN = lsn
			p.Violations[i].CommitTime = c.CommitTime
		}
	}
	var payloads []byte
	for _, s := range b.touched {
		if s.channel == "" {
			continue
		}
		if payloads == nil {
			payloads = make([]byte, 0, b.payloadSize())
			p.Messages = b.msgsArr[:0]
		}
		start := len(payloads)
		payloads = appendChannelMessage(payloads, s.name, p, c)
		p.Messages = append(p.Messages, Message{Channel: s.channel, Section: s.name, Payload: payloads[start:len(payloads):len(payloads)]})
	}
	return p
}

// payloadSize is about the size of the transaction's channel messages, so
// that they are written into one buffer.
func (b *Builder) payloadSize() int {
	n := 0
	for _, s := range b.touched {
		if s.channel != "" {
			n += 100 + len(s.name)
		}
	}
	for i := range b.keys {
		n += len(b.keys[i].Key) + 3
	}
	for i := range b.pats {
		n += len(b.pats[i].Pattern) + 16
	}
	return n
}

// appendChannelMessage appends the channel message of section s:
// {"section":…,"keys":[…],"patterns":[…],"lsn":…,"commit_time":…}, with
// "patterns" left out when there are none. It is what encoding/json makes
// of the same fields, without reflection.
func appendChannelMessage(dst []byte, s string, p *Plan, c replication.Commit) []byte {
	dst = append(dst, `{"section":`...)
	dst = appendJSONString(dst, s)
	dst = append(dst, `,"keys":[`...)
	n := 0
	for i := range p.Keys {
		if p.Keys[i].Section == s {
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, p.Keys[i].Key)
			n++
		}
	}
	dst = append(dst, ']')
	n = 0
	for i := range p.Patterns {
		if p.Patterns[i].Section == s {
			if n == 0 {
				dst = append(dst, `,"patterns":[`...)
			} else {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, p.Patterns[i].Pattern)
			n++
		}
	}
	if n > 0 {
		dst = append(dst, ']')
	}
	dst = append(dst, `,"lsn":"`...)
	dst = appendLSN(dst, c.CommitLSN)
	dst = append(dst, `","commit_time":"`...)
	dst = c.CommitTime.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, `"}`...)
}

// appendLSN appends lsn as pg_lsn text, as pglogrepl.LSN.String does.
func appendLSN(dst []byte, lsn pglogrepl.LSN) []byte {
	dst = appendHex(dst, uint32(lsn>>32))
	dst = append(dst, '/')
	return appendHex(dst, uint32(lsn))
}

func appendHex(dst []byte, v uint32) []byte {
	const digits = "0123456789ABCDEF"
	var buf [8]byte
	i := len(buf)
	for {
		i--
		buf[i] = digits[v&0xF]
		v >>= 4
		if v == 0 {
			break
		}
	}
	return append(dst, buf[i:]...)
}

// Merge absorbs later, the plan of a later part of the same transaction
// (a streamed subtransaction): its keys, patterns and revisions are added,
// and a row's state before the transaction stays the earlier part's while
// its state at commit becomes the later part's.
func (b *Builder) Merge(l *Builder) {
	if l == nil || l == b {
		return
	}
	b.changes += l.changes
	byName := make(map[string]*section, len(b.rules.sections))
	for _, s := range b.rules.sections {
		byName[s.name] = s
	}
	for _, s := range l.touched {
		b.touch(s)
	}
	for s := range l.escalated {
		if !b.escalated[s] {
			b.escalate(s, "merge")
		}
	}
	for _, k := range l.keys {
		b.add(k.Key, byName[k.Section], k.Rule, k.From, false)
	}
	for _, p := range l.pats {
		if b.patterns == nil {
			b.patterns = make(map[string]int)
		}
		id := p.Section + "\x00" + p.Pattern
		if _, ok := b.patterns[id]; !ok {
			b.patterns[id] = len(b.pats)
			b.pats = append(b.pats, p)
		}
	}
	for _, r := range l.revs {
		if !b.hasRevision(r.Key, r.IsPattern) {
			b.appendRevision(r)
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
