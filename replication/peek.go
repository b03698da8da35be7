package replication

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Peek decodes the transactions waiting in a slot without consuming them
// (pg_logical_slot_peek_binary_changes: the slot's position does not move).
// The slot must not be in use. Each committed transaction's changes go to
// the Tx begin returns; at most limit transactions are read (0: all).
func Peek[T Tx[T]](ctx context.Context, databaseURL, slot, publication string, limit int, begin func(Begin) T) ([]Committed[T], error) {
	conn, err := pgconn.Connect(ctx, databaseURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())

	var tables []string
	rows, err := query(ctx, conn, "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = "+quoteLiteral(publication))
	if err != nil {
		return nil, fmt.Errorf("list tables of publication %q: %w", publication, err)
	}
	for _, r := range rows {
		tables = append(tables, r[0])
	}
	dec, err := newSessionDecoder(ctx, conn, databaseURL, publication, tables, nil)
	if err != nil {
		return nil, err
	}
	defer dec.close()

	// upto_nchanges counts changes, not transactions, and the server ends
	// on a transaction boundary; read until limit commits are seen.
	sql := fmt.Sprintf(`SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL,
		'proto_version', '1', 'publication_names', %s)`, quoteLiteral(slot), quoteLiteral(pgx.Identifier{publication}.Sanitize()))
	res := conn.ExecParams(ctx, sql, nil, nil, nil, []int16{1})
	asm := newAssembler(begin)
	var out []Committed[T]
	for res.NextRow() {
		ev, err := dec.decode(res.Values()[0])
		if err == nil {
			var c Committed[T]
			var done bool
			if c, done, err = asm.feed(&ev); done {
				out = append(out, c)
			}
		}
		if err != nil {
			res.Close()
			return nil, err
		}
		if limit > 0 && len(out) >= limit {
			res.Close()
			return out, nil
		}
	}
	if _, err := res.Close(); err != nil {
		if sqlstate(err) == sqlstateObjectInUse {
			return nil, fmt.Errorf("slot %q is being consumed; peek a slot no consumer holds: %w", slot, err)
		}
		return nil, fmt.Errorf("peek slot %q: %w", slot, err)
	}
	return out, nil
}
