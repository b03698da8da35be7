package replication

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"
)

// QueryFunc runs one statement with the simple protocol and returns its rows
// as text, NULL as "". It lets the catalog check read partitions through its
// own kind of connection.
type QueryFunc func(ctx context.Context, sql string) ([][]string, error)

func connQuery(conn *pgconn.PgConn) QueryFunc {
	return func(ctx context.Context, sql string) ([][]string, error) { return query(ctx, conn, sql) }
}

// relNode is one relation as the catalog describes it.
type relNode struct {
	oid         uint32
	name        string // schema.table
	kind        byte   // pg_class.relkind: 'r' table, 'p' partitioned table, 'f' foreign table
	persistence byte   // 'p' permanent, 'u' unlogged
	parent      uint32 // the partitioned table it is a partition of; 0 if none
	listed      bool   // pg_publication_tables lists it
	member      bool   // the publication names it (pg_publication_rel)
	identity    byte   // pg_class.relreplident
	identCols   []string
}

// inWAL reports whether changes of the relation are logged, so that logical
// decoding can see them: foreign and unlogged partitions never are.
func (n *relNode) inWAL() bool { return n.kind != 'f' && n.persistence != 'u' }

// Partitions is the catalog's account of some relations, the partition
// trees that hold them, and how one publication publishes each. Not safe
// for concurrent use.
type Partitions struct {
	pub     string
	exists  bool
	viaRoot bool

	nodes    map[uint32]*relNode
	byName   map[string]uint32
	children map[uint32][]uint32
}

// nodesSQL selects the relations seed picks (a condition on pg_class c and
// pg_namespace n), every relation in their partition trees, and what the
// publication says of each.
func nodesSQL(pub, seed string) string {
	return `WITH listed AS (
	SELECT c.oid FROM pg_publication_tables t
	JOIN pg_namespace n ON n.nspname = t.schemaname
	JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename
	WHERE t.pubname = ` + quoteLiteral(pub) + `
), member AS (
	SELECT r.prrelid AS oid FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
	WHERE p.pubname = ` + quoteLiteral(pub) + `
), seed AS (
	SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE ` + seed + `
), tree AS (
	SELECT oid FROM seed
	UNION SELECT t.relid::oid FROM seed s,
		pg_partition_tree(coalesce(pg_partition_root(s.oid::regclass), s.oid::regclass)) t
)
SELECT c.oid, n.nspname || '.' || c.relname, c.relkind, c.relpersistence, coalesce(i.inhparent, 0),
	c.oid IN (SELECT oid FROM listed), c.oid IN (SELECT oid FROM member), c.relreplident,
	coalesce((SELECT json_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
		WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND (c.relreplident = 'f' OR EXISTS (
			SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND a.attnum = ANY (x.indkey)
			AND ((c.relreplident = 'd' AND x.indisprimary) OR (c.relreplident = 'i' AND x.indisreplident))))), '[]')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relispartition
WHERE c.oid IN (SELECT oid FROM tree)`
}

// ReadPartitions reads tables, the partition trees that hold them, and how
// publication pub publishes each relation of those trees.
func ReadPartitions(ctx context.Context, q QueryFunc, pub string, tables []string) (*Partitions, error) {
	return readPartitions(ctx, q, pub, "n.nspname || '.' || c.relname = ANY("+literalArray(tables)+")")
}

// readPartitions reads the relations seed picks and their trees.
func readPartitions(ctx context.Context, q QueryFunc, pub, seed string) (*Partitions, error) {
	p := &Partitions{pub: pub, nodes: map[uint32]*relNode{}, byName: map[string]uint32{}}
	rows, err := q(ctx, "SELECT pubviaroot FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	if err != nil {
		return nil, fmt.Errorf("read publication %q: %w", pub, err)
	}
	if len(rows) == 1 {
		p.exists, p.viaRoot = true, rows[0][0] == "t"
	}
	rows, err = q(ctx, nodesSQL(pub, seed))
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	nodes, err := parseNodes(rows)
	if err != nil {
		return nil, err
	}
	p.merge(nodes)
	return p, nil
}

func parseNodes(rows [][]string) ([]*relNode, error) {
	out := make([]*relNode, 0, len(rows))
	for _, r := range rows {
		if len(r) != 9 || r[2] == "" || r[3] == "" || r[7] == "" {
			return nil, fmt.Errorf("read partitions: unexpected row %q", r)
		}
		oid, err1 := strconv.ParseUint(r[0], 10, 32)
		parent, err2 := strconv.ParseUint(r[4], 10, 32)
		n := &relNode{oid: uint32(oid), name: r[1], kind: r[2][0], persistence: r[3][0], parent: uint32(parent),
			listed: r[5] == "t", member: r[6] == "t", identity: r[7][0]}
		err3 := json.Unmarshal([]byte(r[8]), &n.identCols)
		if err := firstErr(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("read partitions: row %q: %w", r, err)
		}
		out = append(out, n)
	}
	return out, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// merge records what the catalog said of nodes, replacing what was known of
// them, and rebuilds the tree links.
func (p *Partitions) merge(nodes []*relNode) {
	for _, n := range nodes {
		if old, ok := p.nodes[n.oid]; ok && p.byName[old.name] == n.oid {
			delete(p.byName, old.name)
		}
		p.nodes[n.oid] = n
		p.byName[n.name] = n.oid
	}
	p.children = make(map[uint32][]uint32, len(p.nodes))
	for _, n := range p.nodes {
		if n.parent != 0 {
			p.children[n.parent] = append(p.children[n.parent], n.oid)
		}
	}
}

// ancestors returns the partitioned tables above oid, nearest first.
func (p *Partitions) ancestors(oid uint32) []*relNode {
	var out []*relNode
	n := p.nodes[oid]
	for n != nil && n.parent != 0 && len(out) < len(p.nodes) {
		n = p.nodes[n.parent]
		if n == nil {
			break
		}
		out = append(out, n)
	}
	return out
}

// descendants returns every partition below oid, at any depth, by name.
func (p *Partitions) descendants(oid uint32) []*relNode {
	var out []*relNode
	seen := map[uint32]bool{oid: true}
	queue := []uint32{oid}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, c := range p.children[cur] {
			if !seen[c] {
				seen[c] = true
				out = append(out, p.nodes[c])
				queue = append(queue, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b *relNode) int { return cmp.Compare(a.name, b.name) })
	return out
}

// leaves returns the partitions below oid that hold rows: those whose
// changes pgoutput publishes under a leaf's name.
func (p *Partitions) leaves(oid uint32) []*relNode {
	var out []*relNode
	for _, d := range p.descendants(oid) {
		if d.kind != 'p' {
			out = append(out, d)
		}
	}
	return out
}

// published reports whether the publication publishes changes of oid: the
// relation or one of its ancestors belongs to it (pgoutput looks up the
// ancestors' publications too), or is listed in pg_publication_tables.
func (p *Partitions) published(oid uint32) bool {
	n := p.nodes[oid]
	if n == nil {
		return false
	}
	if n.listed || n.member {
		return true
	}
	for _, a := range p.ancestors(oid) {
		if a.listed || a.member {
			return true
		}
	}
	return false
}

// publishedAs returns the relation whose name oid's changes arrive under:
// under publish_via_partition_root the topmost ancestor in the
// publication, otherwise the relation itself.
func (p *Partitions) publishedAs(oid uint32) *relNode {
	as := p.nodes[oid]
	if !p.viaRoot {
		return as
	}
	for _, a := range p.ancestors(oid) {
		if a.listed || a.member {
			as = a
		}
	}
	return as
}

// Covered reports whether the publication publishes every change of table
// that can be published: its own, or, for a partitioned table, those of
// every partition that is in the WAL. A partitioned table counts as covered
// when it (or an ancestor) belongs to the publication, or when every one of
// its partitions does.
func (p *Partitions) Covered(table string) bool {
	oid, ok := p.byName[table]
	if !ok {
		return false
	}
	if p.published(oid) {
		return true
	}
	if p.nodes[oid].kind != 'p' {
		return false
	}
	logged := 0
	for _, l := range p.leaves(oid) {
		if !l.inWAL() {
			continue
		}
		if !p.published(l.oid) {
			return false
		}
		logged++
	}
	return logged > 0
}

// PartlyCovered reports whether the publication publishes the changes of
// some partitions of table, but not of all.
func (p *Partitions) PartlyCovered(table string) bool {
	oid, ok := p.byName[table]
	if !ok || p.nodes[oid].kind != 'p' || p.Covered(table) {
		return false
	}
	return slices.ContainsFunc(p.leaves(oid), func(l *relNode) bool { return p.published(l.oid) })
}

// Publication reports whether the publication exists and whether it
// publishes partitions' changes under their root's name.
func (p *Partitions) Publication() (exists, viaRoot bool) { return p.exists, p.viaRoot }

// PartitionInfo is what the catalog says of one table's place in partition
// trees and of how the publication publishes it.
type PartitionInfo struct {
	Table       string
	Partitioned bool
	// Ancestors are the partitioned tables above a partition, nearest first.
	Ancestors []string
	// Leaves are the partitions of a partitioned table that hold rows.
	Leaves []string
	// NotInWAL are leaves whose changes never reach the WAL (foreign or
	// unlogged tables): no publication can publish them.
	NotInWAL []string
	// Unpublished are leaves in the WAL (or, for a table that is not
	// partitioned, the table itself) the publication does not publish.
	Unpublished []string
	// Whole is set when the table or an ancestor belongs to the
	// publication, so that partitions created or attached later are
	// published too.
	Whole bool
	// PublishedAs names the ancestor whose name the table's changes arrive
	// under (publish_via_partition_root), or is empty.
	PublishedAs string
	// UnderAncestor are the leaves of a partitioned table whose changes
	// arrive under an ancestor's name (publish_via_partition_root): the
	// server does not publish a TRUNCATE of one of them alone.
	UnderAncestor []string
	// Identity is the table's replica identity (pg_class.relreplident);
	// LeafIdentity holds the leaves in the WAL whose identity differs
	// from it.
	Identity     byte
	LeafIdentity map[string]byte
}

// Info describes table, if the catalog has it.
func (p *Partitions) Info(table string) (PartitionInfo, bool) {
	oid, ok := p.byName[table]
	if !ok {
		return PartitionInfo{}, false
	}
	n := p.nodes[oid]
	info := PartitionInfo{Table: table, Partitioned: n.kind == 'p', Identity: n.identity}
	for _, a := range p.ancestors(oid) {
		info.Ancestors = append(info.Ancestors, a.name)
	}
	info.Whole = n.listed && n.kind == 'p' || n.member
	for _, a := range p.ancestors(oid) {
		info.Whole = info.Whole || a.listed || a.member
	}
	if as := p.publishedAs(oid); as != n {
		info.PublishedAs = as.name
	}
	if n.kind != 'p' {
		if !p.published(oid) {
			info.Unpublished = []string{table}
		}
		return info, true
	}
	for _, l := range p.leaves(oid) {
		info.Leaves = append(info.Leaves, l.name)
		switch {
		case !l.inWAL():
			info.NotInWAL = append(info.NotInWAL, l.name)
		case !p.published(l.oid):
			info.Unpublished = append(info.Unpublished, l.name)
		case p.publishedAs(l.oid) != l:
			info.UnderAncestor = append(info.UnderAncestor, l.name)
		}
		if l.inWAL() && l.identity != n.identity {
			if info.LeafIdentity == nil {
				info.LeafIdentity = map[string]byte{}
			}
			info.LeafIdentity[l.name] = l.identity
		}
	}
	return info, true
}
