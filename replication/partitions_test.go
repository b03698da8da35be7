package replication

import (
	"slices"
	"testing"
)

// pnode builds a catalog row for parseNodes: oid, name, relkind, parent,
// and flags: "listed", "member", "unlogged"; identity 'f' with columns id
// and v unless "default" (identity id).
func pnode(oid, name, kind, parent string, flags ...string) []string {
	row := []string{oid, "public." + name, kind, "p", parent, "f", "f", "f", `["id","v"]`}
	for _, f := range flags {
		switch f {
		case "listed":
			row[5] = "t"
		case "member":
			row[6] = "t"
		case "unlogged":
			row[3] = "u"
		case "default":
			row[7], row[8] = "d", `["id"]`
		}
	}
	return row
}

// tree is m (1) with partitions m_eu (2), m_us (3), the partitioned m_x
// (4) with m_x1 (5), and the foreign m_f (6); t (7) is a plain table.
func tree(t *testing.T, viaRoot bool, flags map[string][]string) *Partitions {
	t.Helper()
	rows := [][]string{
		pnode("1", "m", "p", "0", flags["m"]...),
		pnode("2", "m_eu", "r", "1", flags["m_eu"]...),
		pnode("3", "m_us", "r", "1", flags["m_us"]...),
		pnode("4", "m_x", "p", "1", flags["m_x"]...),
		pnode("5", "m_x1", "r", "4", flags["m_x1"]...),
		pnode("6", "m_f", "f", "1", flags["m_f"]...),
		pnode("7", "t", "r", "0", flags["t"]...),
	}
	nodes, err := parseNodes(rows)
	if err != nil {
		t.Fatal(err)
	}
	p := &Partitions{pub: "p", exists: true, viaRoot: viaRoot, nodes: map[uint32]*relNode{}, byName: map[string]uint32{}}
	p.merge(nodes)
	return p
}

func names(ns []*relNode) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.name)
	}
	return out
}

func TestPartitionTree(t *testing.T) {
	p := tree(t, false, nil)
	if got := names(p.ancestors(5)); !slices.Equal(got, []string{"public.m_x", "public.m"}) {
		t.Errorf("ancestors of m_x1: %v", got)
	}
	if got := names(p.ancestors(7)); got != nil {
		t.Errorf("ancestors of a plain table: %v", got)
	}
	if got := names(p.descendants(1)); !slices.Equal(got, []string{"public.m_eu", "public.m_f", "public.m_us", "public.m_x", "public.m_x1"}) {
		t.Errorf("descendants of m: %v", got)
	}
	if got := names(p.leaves(1)); !slices.Equal(got, []string{"public.m_eu", "public.m_f", "public.m_us", "public.m_x1"}) {
		t.Errorf("leaves of m: %v", got)
	}

	// A detach seen by a later lookup: the partition moves out of the tree.
	detached, err := parseNodes([][]string{pnode("3", "m_us", "r", "0")})
	if err != nil {
		t.Fatal(err)
	}
	p.merge(detached)
	if got := names(p.leaves(1)); slices.Contains(got, "public.m_us") {
		t.Errorf("a detached partition is still a leaf: %v", got)
	}
}

func TestParseNodesRejectsOddRows(t *testing.T) {
	for _, row := range [][]string{
		{"1", "public.m"},
		{"x", "public.m", "p", "p", "0", "f", "f", "d", "[]"},
		{"1", "public.m", "p", "p", "0", "f", "f", "d", "not json"},
		{"1", "public.m", "", "p", "0", "f", "f", "d", "[]"},
	} {
		if _, err := parseNodes([][]string{row}); err == nil {
			t.Errorf("%q accepted", row)
		}
	}
}

func TestPublicationCoverage(t *testing.T) {
	allLeaves := []string{"public.m_eu", "public.m_f", "public.m_us", "public.m_x1"}
	cases := []struct {
		name    string
		viaRoot bool
		flags   map[string][]string
		covered map[string]bool // Covered, by table
		partly  bool            // PartlyCovered(m)
		check   func(t *testing.T, p *Partitions)
	}{
		{"partitioned table in the publication, partitions listed", false,
			map[string][]string{"m": {"member"}, "m_eu": {"listed"}, "m_us": {"listed"}, "m_x1": {"listed"}},
			map[string]bool{"public.m": true, "public.m_eu": true, "public.m_x": true, "public.t": false}, false,
			func(t *testing.T, p *Partitions) {
				info, _ := p.Info("public.m")
				if !info.Partitioned || !info.Whole || !slices.Equal(info.Leaves, allLeaves) ||
					!slices.Equal(info.NotInWAL, []string{"public.m_f"}) || info.Unpublished != nil || info.UnderAncestor != nil {
					t.Errorf("%+v", info)
				}
				if info, _ := p.Info("public.m_x1"); info.PublishedAs != "" || !slices.Equal(info.Ancestors, []string{"public.m_x", "public.m"}) {
					t.Errorf("%+v", info)
				}
			}},
		{"empty partitioned table in the publication: pg_publication_tables lists nothing", false,
			map[string][]string{"m_x": {"member"}},
			map[string]bool{"public.m_x": true, "public.m_x1": true, "public.m": false}, true, nil},
		{"some partitions only", false,
			map[string][]string{"m_eu": {"listed", "member"}},
			map[string]bool{"public.m": false, "public.m_eu": true, "public.m_us": false}, true,
			func(t *testing.T, p *Partitions) {
				info, _ := p.Info("public.m")
				if !slices.Equal(info.Unpublished, []string{"public.m_us", "public.m_x1"}) || info.Whole {
					t.Errorf("%+v", info)
				}
			}},
		{"every partition, one by one", false,
			map[string][]string{"m_eu": {"listed", "member"}, "m_us": {"listed", "member"}, "m_x1": {"listed", "member"}},
			map[string]bool{"public.m": true, "public.m_x": true}, false,
			func(t *testing.T, p *Partitions) {
				if info, _ := p.Info("public.m"); info.Whole || info.Unpublished != nil {
					t.Errorf("%+v", info)
				}
			}},
		{"via the root", true,
			map[string][]string{"m": {"listed", "member"}},
			map[string]bool{"public.m": true, "public.m_eu": true, "public.m_x1": true}, false,
			func(t *testing.T, p *Partitions) {
				info, _ := p.Info("public.m")
				if !slices.Equal(info.UnderAncestor, []string{"public.m_eu", "public.m_us", "public.m_x1"}) || info.PublishedAs != "" {
					t.Errorf("%+v", info)
				}
				if info, _ := p.Info("public.m_x1"); info.PublishedAs != "public.m" {
					t.Errorf("%+v", info)
				}
			}},
		{"via the topmost ancestor in the publication", true,
			map[string][]string{"m": {"member"}, "m_x": {"member"}},
			map[string]bool{"public.m_x1": true}, false,
			func(t *testing.T, p *Partitions) {
				if info, _ := p.Info("public.m_x1"); info.PublishedAs != "public.m" {
					t.Errorf("%+v", info)
				}
			}},
		{"via the root, but only a partition is in the publication", true,
			map[string][]string{"m_x": {"listed", "member"}},
			map[string]bool{"public.m_x1": true, "public.m": false, "public.m_eu": false}, true,
			func(t *testing.T, p *Partitions) {
				if info, _ := p.Info("public.m_x1"); info.PublishedAs != "public.m_x" {
					t.Errorf("%+v", info)
				}
				if info, _ := p.Info("public.m_x"); !slices.Equal(info.UnderAncestor, []string{"public.m_x1"}) || info.PublishedAs != "" {
					t.Errorf("%+v", info)
				}
			}},
		{"nothing", false, nil,
			map[string]bool{"public.m": false, "public.t": false, "public.nope": false}, false, nil},
		{"a plain table", false, map[string][]string{"t": {"listed", "member"}},
			map[string]bool{"public.t": true, "public.m": false}, false,
			func(t *testing.T, p *Partitions) {
				if info, ok := p.Info("public.t"); !ok || info.Partitioned || info.Ancestors != nil || info.Unpublished != nil {
					t.Errorf("%+v", info)
				}
				if _, ok := p.Info("public.nope"); ok {
					t.Error("a table the catalog lacks has info")
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tree(t, tc.viaRoot, tc.flags)
			for table, want := range tc.covered {
				if got := p.Covered(table); got != want {
					t.Errorf("Covered(%s) = %v", table, got)
				}
			}
			if got := p.PartlyCovered("public.m"); got != tc.partly {
				t.Errorf("PartlyCovered(m) = %v", got)
			}
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
}
