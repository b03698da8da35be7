package replication

import (
	"errors"
	"slices"
	"testing"
)

func TestLeafIdentity(t *testing.T) {
	// m_x1 is unlogged: never sent, so its identity does not count.
	p := tree(t, true, map[string][]string{"m_us": {"default"}, "m_x1": {"unlogged", "default"}})
	rel := &Relation{ID: 1, Namespace: "public", Name: "m", ReplicaIdentity: IdentityFull,
		Columns: []Column{{Name: "id", Identity: true}, {Name: "v", Identity: true}}}
	sent := rel.Columns
	leafIdentity(rel, p.leaves(1))
	if rel.ReplicaIdentity != IdentityDefault || !rel.Columns[0].Identity || rel.Columns[1].Identity {
		t.Errorf("FULL root over a DEFAULT partition: %+v", rel)
	}
	if !sent[1].Identity {
		t.Error("the columns as sent were modified")
	}

	full := tree(t, true, nil)
	rel = &Relation{ID: 1, ReplicaIdentity: IdentityDefault, Columns: []Column{{Name: "id", Identity: true}, {Name: "v"}}}
	leafIdentity(rel, full.leaves(1))
	if rel.ReplicaIdentity != IdentityFull || !rel.Columns[1].Identity {
		t.Errorf("DEFAULT root over FULL partitions: %+v", rel)
	}
}

// fakeLookup answers lookups from a map and counts them.
type fakeLookup struct {
	nodes map[uint32][][]string
	pks   map[string][]string
	err   error
	calls []uint32
}

func (f *fakeLookup) lookUp(oid uint32) ([]*relNode, map[string][]string, error) {
	f.calls = append(f.calls, oid)
	if f.err != nil {
		return nil, nil, f.err
	}
	nodes, err := parseNodes(f.nodes[oid])
	return nodes, f.pks, err
}

func (f *fakeLookup) close() {}

// relMsg announces relation id with columns id (in every identity) and v
// (in a FULL identity only).
func relMsg(id uint32, name string, identity byte) msg {
	v := byte(0)
	if identity == 'f' {
		v = 1
	}
	return m('R').u32(id).str("public").str(name).u8(identity).u16(2).
		u8(1).str("id").u32(20).u32(0xffffffff).
		u8(v).str("v").u32(25).u32(0xffffffff)
}

func TestRelationPlacement(t *testing.T) {
	newDec := func(viaRoot bool, flags map[string][]string, lk *fakeLookup) *decoder {
		d := newDecoder(map[string][]string{"public.m": {"id"}})
		d.relmap = newRelationMap(tree(t, viaRoot, flags), []string{"public.m", "public.t"}, lk, nil)
		return d
	}
	leafMode := map[string][]string{"m": {"member"}, "m_eu": {"listed"}, "m_us": {"listed"}, "m_x1": {"listed"}, "t": {"listed"}}

	t.Run("a partition answers to its ancestors and has their key", func(t *testing.T) {
		lk := &fakeLookup{}
		d := newDec(false, leafMode, lk)
		rel := decodeAll(t, d, relMsg(5, "m_x1", 'd'))[0].relation
		if !slices.Equal(rel.Names, []string{"public.m_x1", "public.m_x", "public.m"}) || !slices.Equal(rel.PrimaryKey, []int{0}) {
			t.Errorf("%+v", rel)
		}
		plain := decodeAll(t, d, relMsg(7, "t", 'd'))[0].relation
		if plain.Names != nil || len(lk.calls) != 0 {
			t.Errorf("plain table: %+v, lookups %v", plain, lk.calls)
		}
		// Announced again (ALTER TABLE, DETACH): the catalog is asked again.
		decodeAll(t, d, relMsg(5, "m_x1", 'd'))
		if !slices.Equal(lk.calls, []uint32{5}) {
			t.Errorf("lookups %v", lk.calls)
		}
	})

	t.Run("a partition created while streaming is looked up, and its root learns of it", func(t *testing.T) {
		lk := &fakeLookup{nodes: map[uint32][][]string{9: {
			pnode("1", "m", "p", "0", "listed", "member"),
			pnode("2", "m_eu", "r", "1"),
			pnode("9", "m_new", "r", "1", "default"),
		}}, pks: map[string][]string{"public.m_new": {"id"}}}
		d := newDec(true, map[string][]string{"m": {"listed", "member"}}, lk)
		root := decodeAll(t, d, relMsg(1, "m", 'f'))[0].relation
		if !slices.Contains(root.Names, "public.m_eu") || slices.Contains(root.Names, "public.m_new") || root.ReplicaIdentity != 'f' {
			t.Fatalf("root %+v", root)
		}
		// publish_via_partition_root: the server sends the root, then the
		// new partition, then the change under the root's id.
		decodeAll(t, d, relMsg(1, "m", 'f'))
		leaf := decodeAll(t, d, relMsg(9, "m_new", 'd'))[0].relation
		if !slices.Equal(leaf.Names, []string{"public.m_new", "public.m"}) || !slices.Equal(lk.calls, []uint32{9}) {
			t.Errorf("leaf %+v, lookups %v", leaf, lk.calls)
		}
		cur := d.rels[1]
		if cur == root || !slices.Contains(cur.Names, "public.m_new") {
			t.Errorf("root not refreshed: %+v", cur)
		}
		// The new partition has DEFAULT identity: the root's changes may
		// carry key-only old rows now.
		if cur.ReplicaIdentity != IdentityDefault || cur.Columns[1].Identity {
			t.Errorf("root identity not refreshed: %+v", cur)
		}
		if root.ReplicaIdentity != 'f' || slices.Contains(root.Names, "public.m_new") {
			t.Error("the value a transaction may hold was modified")
		}
		ev := decodeAll(t, d, m('I').u32(1).u8('N').cols(2).text("1").text("x"))[0]
		if ev.change.Rel != cur {
			t.Error("the change does not carry the refreshed root")
		}
	})

	t.Run("a relation the catalog no longer places is in doubt", func(t *testing.T) {
		lk := &fakeLookup{nodes: map[uint32][][]string{
			10: nil, // dropped
			11: {pnode("11", "detached", "r", "0")},
			12: {pnode("12", "other", "r", "0", "listed")},
		}}
		d := newDec(false, leafMode, lk)
		for id, want := range map[uint32][]string{
			10: {"public.gone", "public.m"},
			11: {"public.detached", "public.m"},
			12: nil,
		} {
			name := map[uint32]string{10: "gone", 11: "detached", 12: "other"}[id]
			rel := decodeAll(t, d, relMsg(id, name, 'd'))[0].relation
			if !slices.Equal(rel.Names, want) {
				t.Errorf("%s: names %v, want %v", name, rel.Names, want)
			}
		}
	})

	t.Run("a failed lookup fails the decode", func(t *testing.T) {
		boom := errors.New("connection refused")
		d := newDec(false, leafMode, &fakeLookup{err: boom})
		if _, err := d.decode(relMsg(9, "m_new", 'd')); !errors.Is(err, boom) {
			t.Errorf("err %v", err)
		}
		if d.rels[9] != nil {
			t.Error("the relation was cached")
		}
	})
}
