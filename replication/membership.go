package replication

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// sqlstateDuplicateObject is what ALTER PUBLICATION … ADD TABLE raises for
// a table that is a member already.
const sqlstateDuplicateObject = "42710"

// unpublished returns the tables whose changes publication pub does not
// publish. A partitioned table is published when the publication covers
// it: directly, through an ancestor, or through every one of its
// partitions (pg_publication_tables lists partitions, or only the root
// under publish_via_partition_root, so its rows alone cannot tell).
func unpublished(ctx context.Context, conn *pgconn.PgConn, pub string, tables []string) ([]string, error) {
	parts, err := ReadPartitions(ctx, connQuery(conn), pub, tables)
	if err != nil {
		return nil, fmt.Errorf("list tables of publication %q: %w", pub, err)
	}
	var out []string
	for _, t := range tables {
		if !parts.Covered(t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// addTables adds tables to publication pub. A table that is a member
// already counts as added: adding it again can never succeed, so retrying
// would loop. It happens when another instance added it first, or when
// the catalog's view of a partitioned table and its partitions misled the
// check before.
func addTables(ctx context.Context, conn *pgconn.PgConn, pub string, tables []string) error {
	add := func(ts []string) error {
		_, err := query(ctx, conn, "ALTER PUBLICATION "+pgx.Identifier{pub}.Sanitize()+" ADD TABLE "+tableList(ts))
		return err
	}
	err := add(tables)
	if sqlstate(err) == sqlstateDuplicateObject && len(tables) > 1 {
		// One statement adds all or none: add them one by one.
		for _, t := range tables {
			if err = add([]string{t}); err != nil && sqlstate(err) != sqlstateDuplicateObject {
				break
			}
		}
	}
	if err != nil && sqlstate(err) != sqlstateDuplicateObject {
		return fmt.Errorf("add tables %s to publication %q: %w", strings.Join(tables, ", "), pub, err)
	}
	return nil
}
