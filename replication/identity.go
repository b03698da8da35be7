package replication

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Identity is a table's replica identity as the server applies it to the
// application's writes. Once a table is in a publication that publishes
// updates (deletes), the server refuses every UPDATE (DELETE) on it unless
// it can log the old row's identity: "cannot update table … because it
// does not have a replica identity and publishes updates".
type Identity struct {
	Table string
	Kind  byte // pg_class.relreplident: d (default), n (nothing), f (full), i (index)
	// Indexed reports that the index the identity rests on exists: the
	// primary key under DEFAULT, the chosen index under USING INDEX.
	// Dropping that index leaves relreplident at 'i' with no index marked
	// indisreplident, which the server treats as NOTHING.
	Indexed bool
}

// Usable reports whether the server can log the old row of an UPDATE or
// DELETE, so that a publication publishing them does not fail the writes.
func (id Identity) Usable() bool {
	switch id.Kind {
	case 'f':
		return true
	case 'd', 'i':
		return id.Indexed
	}
	return false
}

func (id Identity) why() string {
	switch id.Kind {
	case 'd':
		return "REPLICA IDENTITY DEFAULT and no primary key"
	case 'i':
		return "REPLICA IDENTITY USING INDEX, whose index was dropped"
	}
	return "REPLICA IDENTITY NOTHING"
}

func (id Identity) fix() string {
	if id.Kind == 'd' {
		return fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL, or add a primary key", id.Table)
	}
	return fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL, or give it a primary key and REPLICA IDENTITY DEFAULT", id.Table)
}

// IdentityQuery returns SQL yielding, for each of tables that exists, its
// name, relreplident and whether the index its identity rests on exists
// ("true" or "false"). It is plain SQL with literals, so it runs on a
// replication connection (simple protocol only) as on an ordinary one.
func IdentityQuery(tables []string) string {
	return `SELECT n.nspname || '.' || c.relname, c.relreplident::text,
		EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND
			((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname || '.' || c.relname = ANY(` + literalArray(tables) + `)`
}

// ParseIdentity reads a row of IdentityQuery.
func ParseIdentity(table, kind, indexed string) Identity {
	id := Identity{Table: table, Indexed: indexed == "true"}
	if kind != "" {
		id.Kind = kind[0]
	}
	return id
}

// IdentityError names tables without a usable replica identity in a
// publication that publishes updates or deletes: the application's UPDATE
// or DELETE on them fails while they are in it.
type IdentityError struct {
	Publication    string
	Update, Delete bool // what the publication publishes
	// Member reports that the tables are in the publication already; else
	// adding them would break the writes, and cdcd does not.
	Member bool
	Tables []Identity
}

func (e *IdentityError) Error() string {
	var published, writes []string
	if e.Update {
		published, writes = append(published, "updates"), append(writes, "UPDATE")
	}
	if e.Delete {
		published, writes = append(published, "deletes"), append(writes, "DELETE")
	}
	pubs, w := strings.Join(published, " and "), strings.Join(writes, " and ")
	msgs := make([]string, len(e.Tables))
	for i, id := range e.Tables {
		var what string
		if e.Member {
			what = fmt.Sprintf("it is in publication %s, which publishes %s, so every %s the application runs on it fails", e.Publication, pubs, w)
		} else {
			what = fmt.Sprintf("adding it to publication %s, which publishes %s, would make every %s the application runs on it fail: it must not be added until it has one", e.Publication, pubs, w)
		}
		msgs[i] = fmt.Sprintf("table %s has no usable replica identity (%s): %s. Fix: %s", id.Table, id.why(), what, id.fix())
	}
	return strings.Join(msgs, "; ")
}

// Unwrap classifies the error as ErrConfig.
func (e *IdentityError) Unwrap() error { return ErrConfig }

// guardIdentity returns an *IdentityError when adding tables to publication
// pub would make the application's UPDATE or DELETE on one of them fail.
// Every statement of cdcd that adds a table to a publication runs behind
// it. A publication that does not exist yet is the one cdcd creates, which
// publishes every operation.
func guardIdentity(ctx context.Context, conn *pgconn.PgConn, pub string, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	update, del := true, true
	rows, err := query(ctx, conn, "SELECT pubupdate::text, pubdelete::text FROM pg_publication WHERE pubname = "+quoteLiteral(pub))
	if err != nil {
		return fmt.Errorf("read what publication %q publishes: %w", pub, err)
	}
	if len(rows) == 1 {
		update, del = rows[0][0] == "true", rows[0][1] == "true"
	}
	if !update && !del {
		return nil
	}
	rows, err = query(ctx, conn, IdentityQuery(tables))
	if err != nil {
		return fmt.Errorf("read replica identities: %w", err)
	}
	var bad []Identity
	for _, r := range rows {
		if id := ParseIdentity(r[0], r[1], r[2]); !id.Usable() {
			bad = append(bad, id)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &IdentityError{Publication: pub, Update: update, Delete: del, Tables: bad}
}
