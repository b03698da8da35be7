package replication

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// relationMap places the relations a session's stream announces in their
// partition trees, so that a change to a partition reaches the rules of the
// partitioned tables above it. It starts from the catalog as the session
// found it and looks up a relation the stream introduces later (a partition
// created or attached meanwhile) on a connection of its own.
type relationMap struct {
	parts  *Partitions
	tables []string       // the session's rule tables
	lookup relationLookup // nil: no lookups
	log    *slog.Logger   // never nil

	// sent holds partitioned relations as the server sent them: their
	// names and identity depend on their partitions, and are worked out
	// again when a lookup finds a new partition.
	sent map[uint32]*Relation
	// doubt holds relations whose place the catalog no longer tells.
	doubt map[uint32]bool
}

// relationLookup reads the partition tree of a relation, and the primary
// keys of its relations, from the catalog as it is now.
type relationLookup interface {
	lookUp(oid uint32) ([]*relNode, map[string][]string, error)
	close()
}

// newSessionDecoder reads, over conn, the partition trees of tables and of
// the relations publication pub lists, and the primary keys of the rule
// tables' trees, and returns a decoder that places relations with them.
// Lookups go through a connection to databaseURL opened when first needed;
// they end with ctx. Close the decoder when the session ends.
func newSessionDecoder(ctx context.Context, conn *pgconn.PgConn, databaseURL, pub string, tables []string, log *slog.Logger) (*decoder, error) {
	seed := "n.nspname || '.' || c.relname = ANY(" + literalArray(tables) + ") OR c.oid IN (SELECT oid FROM listed)"
	parts, err := readPartitions(ctx, connQuery(conn), pub, seed)
	if err != nil {
		return nil, err
	}
	names := slices.Clone(tables)
	for _, t := range tables {
		if oid, ok := parts.byName[t]; ok {
			for _, n := range append(parts.ancestors(oid), parts.descendants(oid)...) {
				names = append(names, n.name)
			}
		}
	}
	slices.Sort(names)
	pks, err := primaryKeys(ctx, conn, slices.Compact(names))
	if err != nil {
		return nil, err
	}
	d := newDecoder(pks)
	d.relmap = newRelationMap(parts, tables, &lookupConn{ctx: ctx, url: databaseURL, pub: pub}, log)
	return d, nil
}

func newRelationMap(parts *Partitions, tables []string, lookup relationLookup, log *slog.Logger) *relationMap {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &relationMap{parts: parts, tables: tables, lookup: lookup, log: log,
		sent: map[uint32]*Relation{}, doubt: map[uint32]bool{}}
}

// close releases the lookup connection.
func (d *decoder) close() {
	if d.relmap != nil && d.relmap.lookup != nil {
		d.relmap.lookup.close()
	}
}

// place works out rel's names and primary key before it enters the cache.
// A relation the session has not seen in the catalog is looked up, and so
// is a partition or table the server announces again (after ALTER TABLE,
// ATTACH or DETACH PARTITION, which change what the catalog says of it). A
// failed lookup fails the decode: the session ends and its changes are
// sent again, never dropped.
func (d *decoder) place(rel *Relation) error {
	m := d.relmap
	if m == nil {
		rel.PrimaryKey = primaryKeyIndexes(rel, d.primaryKeys[rel.Table()])
		return nil
	}
	n := m.parts.nodes[rel.ID]
	_, resent := d.rels[rel.ID]
	if m.lookup != nil && (n == nil || resent && n.kind != 'p') {
		if err := d.lookUp(rel); err != nil {
			return err
		}
		defer d.refresh()
	}
	if m.parts.nodes[rel.ID] != nil && m.parts.nodes[rel.ID].kind == 'p' {
		orig := *rel
		m.sent[rel.ID] = &orig
	}
	d.dress(rel)
	return nil
}

// lookUp reads rel's partition tree (and its primary keys) from the catalog
// as it is now. A relation the catalog no longer shows as published or as a
// partition came to the stream from a state that is gone — a partition
// detached or dropped since its change — and is in doubt.
func (d *decoder) lookUp(rel *Relation) error {
	m := d.relmap
	nodes, pks, err := m.lookup.lookUp(rel.ID)
	if err != nil {
		return fmt.Errorf("look up relation %s (oid %d): %w", rel.Table(), rel.ID, err)
	}
	m.parts.merge(nodes)
	if d.primaryKeys == nil {
		d.primaryKeys = map[string][]string{}
	}
	for t, cols := range pks {
		d.primaryKeys[t] = cols
	}
	n := m.parts.nodes[rel.ID]
	gone := n == nil || !slices.ContainsFunc(nodes, func(x *relNode) bool { return x.oid == rel.ID })
	doubt := gone || n.parent == 0 && n.kind != 'p' && !n.listed && !n.member
	if doubt && !m.doubt[rel.ID] {
		m.log.Warn("the catalog no longer shows this relation as published or as a partition: its changes may come from a partition detached or dropped since; matching them to every partitioned rule table",
			"table", rel.Table(), "tables", m.partitioned())
	}
	m.doubt[rel.ID] = doubt
	return nil
}

// partitioned returns the rule tables that are partitioned.
func (m *relationMap) partitioned() []string {
	var out []string
	for _, t := range m.tables {
		if oid, ok := m.parts.byName[t]; ok && m.parts.nodes[oid].kind == 'p' {
			out = append(out, t)
		}
	}
	return out
}

// dress sets rel's Names, primary key and, for a partitioned table, the
// replica identity its changes really carry.
func (d *decoder) dress(rel *Relation) {
	m := d.relmap
	p := m.parts
	names := []string{rel.Table()}
	pkFrom := names[:1:1]
	if n := p.nodes[rel.ID]; n != nil {
		for _, a := range p.ancestors(rel.ID) {
			names = append(names, a.name)
		}
		pkFrom = names
		if n.kind == 'p' {
			for _, c := range p.descendants(rel.ID) {
				names = append(names, c.name)
			}
			leafIdentity(rel, p.leaves(rel.ID))
		}
	}
	if m.doubt[rel.ID] {
		for _, t := range m.partitioned() {
			if !slices.Contains(names, t) {
				names = append(names, t)
			}
		}
	}
	rel.Names = nil
	if len(names) > 1 {
		rel.Names = names
	}
	// A partition has its partitioned table's key; the first of its own
	// and its ancestors' keys that the catalog gave is it.
	rel.PrimaryKey = nil
	for _, t := range pkFrom {
		if cols := d.primaryKeys[t]; len(cols) > 0 {
			rel.PrimaryKey = primaryKeyIndexes(rel, cols)
			break
		}
	}
}

// refresh works the partitioned relations in the cache out again after a
// lookup changed what the session knows of their partitions. The cache
// gets new values: a Tx may still hold the old ones.
func (d *decoder) refresh() {
	for id, orig := range d.relmap.sent {
		cur, ok := d.rels[id]
		if !ok {
			continue
		}
		nw := *orig
		d.dress(&nw)
		if !slices.Equal(nw.Names, cur.Names) || nw.ReplicaIdentity != cur.ReplicaIdentity || !slices.Equal(nw.Columns, cur.Columns) {
			d.rels[id] = &nw
		}
	}
}

// leafIdentity gives a partitioned table the replica identity of its
// partitions. Under publish_via_partition_root the server describes the
// root's identity, but the old row of a change is logged under the
// partition's own identity, which ALTER TABLE on the root does not change:
// a root with REPLICA IDENTITY FULL over DEFAULT partitions sends key-only
// old rows. Only columns in every partition's identity count as identity
// columns; FULL only if every partition is FULL.
func leafIdentity(rel *Relation, leaves []*relNode) {
	var kind byte
	var common []string
	n := 0
	for _, l := range leaves {
		if !l.inWAL() {
			continue
		}
		if n == 0 {
			kind, common = l.identity, slices.Clone(l.identCols)
		} else {
			if l.identity != kind {
				kind = IdentityDefault
			}
			common = slices.DeleteFunc(common, func(c string) bool { return !slices.Contains(l.identCols, c) })
		}
		n++
	}
	if n == 0 {
		return // no partition: nothing to send
	}
	cols := make([]Column, len(rel.Columns))
	for i, c := range rel.Columns {
		c.Identity = slices.Contains(common, c.Name)
		cols[i] = c
	}
	rel.Columns = cols
	rel.ReplicaIdentity = kind
}

var _ relationLookup = (*lookupConn)(nil)

// lookupTimeout bounds one lookup, during which the receive loop waits.
const lookupTimeout = 5 * time.Second

// lookupConn is an ordinary (non-replication) connection for lookups in the
// middle of a session: the replication connection is busy streaming.
type lookupConn struct {
	ctx  context.Context // the session's
	url  string
	pub  string
	conn *pgconn.PgConn
}

func (l *lookupConn) lookUp(oid uint32) (nodes []*relNode, pks map[string][]string, err error) {
	err = l.do(func(ctx context.Context, conn *pgconn.PgConn) error {
		rows, err := query(ctx, conn, nodesSQL(l.pub, fmt.Sprintf("c.oid = %d", oid)))
		if err != nil {
			return err
		}
		if nodes, err = parseNodes(rows); err != nil {
			return err
		}
		names := make([]string, len(nodes))
		for i, n := range nodes {
			names[i] = n.name
		}
		pks, err = primaryKeys(ctx, conn, names)
		return err
	})
	return nodes, pks, err
}

// do runs f on the connection, opening it when needed. After a failure it
// tries once more on a new connection.
func (l *lookupConn) do(f func(ctx context.Context, conn *pgconn.PgConn) error) error {
	err := l.try(f)
	if err != nil && l.ctx.Err() == nil {
		err = l.try(f)
	}
	return err
}

func (l *lookupConn) try(f func(ctx context.Context, conn *pgconn.PgConn) error) error {
	ctx, cancel := context.WithTimeout(l.ctx, lookupTimeout)
	defer cancel()
	if l.conn == nil || l.conn.IsClosed() {
		cfg, err := pgconn.ParseConfig(l.url)
		if err != nil {
			return err
		}
		if _, ok := cfg.RuntimeParams["application_name"]; !ok {
			cfg.RuntimeParams["application_name"] = "cdcd"
		}
		if l.conn, err = pgconn.ConnectConfig(ctx, cfg); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
	}
	if err := f(ctx, l.conn); err != nil {
		l.close()
		return err
	}
	return nil
}

func (l *lookupConn) close() {
	if l.conn != nil {
		l.conn.Close(context.Background())
		l.conn = nil
	}
}
