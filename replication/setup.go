package replication

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// query runs one simple-protocol statement and returns its rows as text.
// NULL becomes "". Replication connections accept only the simple protocol.
func query(ctx context.Context, conn *pgconn.PgConn, sql string) ([][]string, error) {
	results, err := conn.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	var rows [][]string
	for _, res := range results {
		for _, r := range res.Rows {
			row := make([]string, len(r))
			for i, v := range r {
				row[i] = string(v)
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// quoteLiteral quotes s as a string constant. Replication connections
// speak only the simple query protocol, so values go into the SQL text, and
// neither pgx nor pgconn exports a quoting that needs no connection. As
// PostgreSQL's quote_literal does, a value with a backslash becomes an
// escape string constant (E'...'), which reads the same whether or not the
// server has standard_conforming_strings on.
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		q = "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

// tableList quotes tables, each "schema.table", as a comma-separated list
// of "schema"."table" identifiers.
func tableList(tables []string) string {
	q := make([]string, len(tables))
	for i, t := range tables {
		q[i] = pgx.Identifier(strings.SplitN(t, ".", 2)).Sanitize()
	}
	return strings.Join(q, ", ")
}

func literalArray(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = quoteLiteral(s)
	}
	return "ARRAY[" + strings.Join(q, ",") + "]::text[]"
}

// ensurePublication checks that the publication holds every table, creating
// it for them when it does not exist, and adds missing tables to a
// publication cdcd created, never a table whose UPDATE and DELETE the
// publication would then make fail (guardIdentity). It reports whether it
// changed the publication.
func ensurePublication(ctx context.Context, conn *pgconn.PgConn, pub string, tables []string) (created bool, err error) {
	rows, err := query(ctx, conn, "SELECT 1 FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	if err != nil {
		return false, fmt.Errorf("look up publication %q: %w", pub, err)
	}
	if len(rows) > 0 {
		missing, err := unpublished(ctx, conn, pub, tables)
		if err != nil {
			return false, err
		}
		if len(missing) > 0 {
			// Before a DBA is told to add them, too.
			if err := guardIdentity(ctx, conn, pub, missing); err != nil {
				return false, err
			}
			if !managed(ctx, conn, pub) {
				return false, &PublicationError{Publication: pub, Missing: missing}
			}
			// cdcd created this publication: its tables follow the rules.
			if err := existing(ctx, conn, missing); err != nil {
				return false, err
			}
			return true, addTables(ctx, conn, pub, missing)
		}
		return false, nil
	}
	if len(tables) == 0 {
		return false, configError("publication %q does not exist and the rules name no table to create it for", pub)
	}
	if err := existing(ctx, conn, tables); err != nil {
		return false, err
	}
	if err := guardIdentity(ctx, conn, pub, tables); err != nil {
		return false, err
	}
	ident := pgx.Identifier{pub}.Sanitize()
	if _, err := query(ctx, conn, "CREATE PUBLICATION "+ident+" FOR TABLE "+tableList(tables)); err != nil {
		if sqlstate(err) == "42501" {
			return false, configError("publication %q does not exist and this role may not create it (%v): have a DBA run migrations/004_publication.sql", pub, err)
		}
		return false, fmt.Errorf("create publication %q: %w", pub, err)
	}
	if _, err := query(ctx, conn, "COMMENT ON PUBLICATION "+ident+" IS "+quoteLiteral(managedComment)); err != nil {
		return false, fmt.Errorf("mark publication %q as managed by cdcd: %w", pub, err)
	}
	return true, nil
}

// managedComment marks a publication cdcd created: cdcd adds the tables of
// new rules to it. A publication a DBA created is left to the DBA.
const managedComment = "managed by cdcd: its tables follow the rules file"

func managed(ctx context.Context, conn *pgconn.PgConn, pub string) bool {
	rows, err := query(ctx, conn, "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	return err == nil && len(rows) == 1 && rows[0][0] == managedComment
}

// existing returns a configuration error naming the tables that do not exist.
func existing(ctx context.Context, conn *pgconn.PgConn, tables []string) error {
	rows, err := query(ctx, conn, `SELECT n.nspname || '.' || c.relname FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(`+literalArray(tables)+`)`)
	if err != nil {
		return fmt.Errorf("look up rule tables: %w", err)
	}
	var missing []string
	for _, t := range tables {
		if !slices.ContainsFunc(rows, func(r []string) bool { return r[0] == t }) {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return configError("rule tables do not exist: %s", strings.Join(missing, ", "))
	}
	return nil
}

// EnsurePublication makes sure publication pub holds tables over an
// ordinary (non-replication) connection: it creates the publication when it
// is missing, adds tables to one cdcd created, and otherwise returns a
// *PublicationError naming the tables a DBA must add. changed reports
// whether it created or altered the publication.
func EnsurePublication(ctx context.Context, databaseURL, pub string, tables []string) (changed bool, err error) {
	conn, err := pgconn.Connect(ctx, databaseURL)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.Background())
	return ensurePublication(ctx, conn, pub, tables)
}

// slotState is what pg_replication_slots says about our slot.
type slotState struct {
	confirmed pglogrepl.LSN
	walStatus string
	created   bool
	active    bool // another session streams from it
	activePID string
}

// ensureSlot returns the slot's confirmed position, creating a pgoutput slot
// when none exists.
func ensureSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotState, error) {
	rows, err := query(ctx, conn, `SELECT plugin, slot_type, coalesce(database, ''), coalesce(confirmed_flush_lsn::text, ''),
		coalesce(wal_status, ''), current_database(), active, coalesce(active_pid::text, '')
		FROM pg_replication_slots WHERE slot_name = `+quoteLiteral(slot))
	if err != nil {
		return slotState{}, fmt.Errorf("look up slot %q: %w", slot, err)
	}
	if len(rows) == 0 {
		res, err := pglogrepl.CreateReplicationSlot(ctx, conn, slot, "pgoutput",
			pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "NOEXPORT_SNAPSHOT"})
		if err != nil {
			if sqlstate(err) == sqlstateObjectNotInState || sqlstate(err) == sqlstateInvalidName {
				return slotState{}, configError("create slot %q: %v", slot, err)
			}
			return slotState{}, fmt.Errorf("create slot %q: %w", slot, err)
		}
		lsn, err := pglogrepl.ParseLSN(res.ConsistentPoint)
		if err != nil {
			return slotState{}, fmt.Errorf("create slot %q: consistent point %q: %w", slot, res.ConsistentPoint, err)
		}
		return slotState{confirmed: lsn, created: true}, nil
	}
	r := rows[0]
	switch {
	case r[1] != "logical":
		return slotState{}, configError("slot %q is a %s slot, not a logical one", slot, r[1])
	case r[0] != "pgoutput":
		return slotState{}, configError("slot %q uses output plugin %q, not pgoutput", slot, r[0])
	case r[2] != r[5]:
		return slotState{}, configError("slot %q belongs to database %q, not %q", slot, r[2], r[5])
	}
	lsn, err := pglogrepl.ParseLSN(r[3])
	if err != nil {
		return slotState{}, fmt.Errorf("slot %q: confirmed_flush_lsn %q: %w", slot, r[3], err)
	}
	return slotState{confirmed: lsn, walStatus: r[4], active: r[6] == "t", activePID: r[7]}, nil
}

// primaryKeys reads the primary key columns of tables, in key order.
func primaryKeys(ctx context.Context, conn *pgconn.PgConn, tables []string) (map[string][]string, error) {
	pk := make(map[string][]string)
	if len(tables) == 0 {
		return pk, nil
	}
	rows, err := query(ctx, conn, `SELECT n.nspname || '.' || c.relname, a.attname
		FROM pg_index i
		JOIN pg_class c ON c.oid = i.indrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace
		CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
		WHERE i.indisprimary AND n.nspname || '.' || c.relname = ANY(`+literalArray(tables)+`)
		ORDER BY 1, k.ord`)
	if err != nil {
		return nil, fmt.Errorf("read primary keys: %w", err)
	}
	for _, r := range rows {
		pk[r[0]] = append(pk[r[0]], r[1])
	}
	return pk, nil
}
