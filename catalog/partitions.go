package catalog

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pgx/v5"
)

// readPartitions reads the partition trees of the rule tables and how the
// publication publishes them.
func readPartitions(ctx context.Context, q Querier, publication string, tables []string) (*replication.Partitions, error) {
	query := func(ctx context.Context, sql string) ([][]string, error) {
		// The simple protocol returns every value as text.
		rows, err := q.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var out [][]string
		for rows.Next() {
			raw := rows.RawValues()
			row := make([]string, len(raw))
			for i, v := range raw {
				row[i] = string(v)
			}
			out = append(out, row)
		}
		return out, rows.Err()
	}
	return replication.ReadPartitions(ctx, query, publication, tables)
}

// maxListed caps how many partitions a finding names.
const maxListed = 8

func listNames(names []string) string {
	if len(names) <= maxListed {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxListed], ", "), len(names)-maxListed)
}

func identityList(leaves map[string]byte, skip func(byte) bool) []string {
	var out []string
	for name, id := range leaves {
		if !skip(id) {
			out = append(out, fmt.Sprintf("%s (%s)", name, identityName(id)))
		}
	}
	slices.Sort(out)
	return out
}

// partitionFindings says what the catalog shows of the rule tables that are
// partitioned or are partitions, and reports each combination that hides
// changes from cdcd (an error) or costs more invalidation (a warning).
func partitionFindings(f *rules.File, parts *replication.Partitions, publication string) []Finding {
	pubExists, viaRoot := parts.Publication()
	pub := pgx.Identifier{publication}.Sanitize()
	var out []Finding
	seen := map[string]bool{}
	add := func(owner Finding, sev Severity, table, format string, args ...any) {
		fd := owner
		fd.Severity, fd.Table, fd.Msg = sev, table, fmt.Sprintf(format, args...)
		out = append(out, fd)
	}
	check := func(owner Finding, table string, ops []string, invariant bool) {
		info, ok := parts.Info(table)
		if !ok || !info.Partitioned && len(info.Ancestors) == 0 {
			return
		}
		truncates := !invariant && (len(ops) == 0 || slices.Contains(ops, "truncate"))
		// What the catalog shows, once per table.
		if !seen[table] {
			seen[table] = true
			tableFindings(add, owner, info, publication, pub, pubExists, viaRoot)
		}
		// What old rows cost: once for the rules, for each invariant.
		if key := "identity:" + table; invariant || !seen[key] {
			seen[key] = !invariant
			identityFindings(add, owner, info, invariant)
		}
		// What hides a rule's changes depends on its operations.
		switch {
		case info.Partitioned && truncates && len(info.UnderAncestor) > 0:
			add(owner, Error, table, "publication %s publishes partitions of %s under their root's name (publish_via_partition_root): the server does not publish a TRUNCATE of one partition alone (%s), so cdcd cannot see it. ALTER PUBLICATION %s SET (publish_via_partition_root = false), or leave \"truncate\" out of the rule's operations if partitions are never truncated one by one",
				publication, table, listNames(info.UnderAncestor), pub)
		case !info.Partitioned && info.PublishedAs != "" && truncates:
			add(owner, Error, table, "publication %s publishes %s under the name of %s (publish_via_partition_root): the server does not publish a TRUNCATE of %s alone, so cdcd cannot see it. ALTER PUBLICATION %s SET (publish_via_partition_root = false)",
				publication, table, info.PublishedAs, table, pub)
		}
	}
	for _, r := range f.Rules {
		for _, t := range r.Tables {
			check(Finding{Pos: r.Pos, Rule: r.Name}, t, r.Operations, false)
		}
	}
	for _, inv := range f.Invariants {
		check(Finding{Pos: inv.Pos, Invariant: inv.Name}, inv.Table, nil, true)
	}
	return out
}

// tableFindings reports what the catalog shows of one partitioned table or
// partition.
func tableFindings(add func(Finding, Severity, string, string, ...any), owner Finding, info replication.PartitionInfo,
	publication, pub string, pubExists, viaRoot bool) {
	table := info.Table
	if !info.Partitioned {
		// A rule names a partition.
		parent := info.Ancestors[0]
		if info.PublishedAs != "" {
			add(owner, Warning, table, "table %s is a partition of %s, and publication %s publishes its changes under the name of %s (publish_via_partition_root): cdcd cannot tell them from other partitions' changes, so this rule applies to every change of %s",
				table, parent, publication, info.PublishedAs, info.PublishedAs)
		} else {
			add(owner, Note, table, "table %s is a partition of %s: the server names the partition in changes made through %s, so they reach this rule too",
				table, parent, parent)
		}
		return
	}
	how := ""
	switch {
	case !pubExists:
		how = fmt.Sprintf("publication %s does not exist yet; cdcd creates it publishing each partition's changes under the partition's name", publication)
	case viaRoot && len(info.UnderAncestor) > 0:
		how = fmt.Sprintf("publication %s publishes their changes under the root's name (publish_via_partition_root)", publication)
	default:
		how = fmt.Sprintf("publication %s publishes each partition's changes under the partition's name", publication)
	}
	if len(info.Leaves) == 0 {
		add(owner, Note, table, "table %s is partitioned and has no partitions yet: a rule on it covers those created or attached later; %s", table, how)
	} else {
		add(owner, Note, table, "table %s is partitioned into %d partitions (%s): a rule on it covers them all, and those created or attached later; %s",
			table, len(info.Leaves), listNames(info.Leaves), how)
	}
	if len(info.NotInWAL) > 0 {
		add(owner, Warning, table, "partitions %s of %s are foreign or unlogged tables: their changes never reach the WAL, so cdcd cannot see them",
			listNames(info.NotInWAL), table)
	}
	logged := len(info.Leaves) - len(info.NotInWAL)
	if pubExists && len(info.Unpublished) > 0 && len(info.Unpublished) < logged {
		add(owner, Error, table, "publication %s holds only some partitions of %s: changes to %s are not streamed. ALTER PUBLICATION %s ADD TABLE %s",
			publication, table, listNames(info.Unpublished), pub, table)
	}
	if pubExists && len(info.Unpublished) == 0 && logged > 0 && !info.Whole {
		add(owner, Warning, table, "publication %s holds each partition of %s but not %s itself: partitions created or attached later will not be streamed. ALTER PUBLICATION %s ADD TABLE %s",
			publication, table, table, pub, table)
	}
}

// identityFindings reports the partitions of a partitioned table with
// REPLICA IDENTITY FULL that lack it. ALTER TABLE … REPLICA IDENTITY on a
// partitioned table does not reach its partitions, and each partition's
// identity decides what old row its changes carry.
func identityFindings(add func(Finding, Severity, string, string, ...any), owner Finding, info replication.PartitionInfo, invariant bool) {
	if !info.Partitioned || info.Identity != 'f' {
		return
	}
	weaker := identityList(info.LeafIdentity, func(id byte) bool { return id == 'f' })
	if len(weaker) == 0 {
		return
	}
	sev, what := Warning, "column filters and key templates that need the old row fall back to wider invalidation"
	if invariant {
		sev, what = Error, "the invariant cannot be checked for them"
	}
	add(owner, sev, info.Table, "table %s has REPLICA IDENTITY FULL but its partitions %s do not (it does not cascade): their UPDATEs and DELETEs carry no whole old row, so %s. ALTER TABLE … REPLICA IDENTITY FULL on each partition",
		info.Table, listNames(weaker), what)
}
