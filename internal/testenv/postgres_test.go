package testenv

import (
	"context"
	"testing"
	"time"
)

// TestTwoPostgres checks that one process can run two independent private
// servers: the tests that move "the database behind the URL" to another
// server need a second one with its own system identifier, also when
// CDCD_TEST_DATABASE_URL names the first.
func TestTwoPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t.Setenv(envDatabaseURL, "")
	a := MustPostgres(t)
	t.Setenv(envDatabaseURL, a.URL)
	b := MustPrivatePostgres(t)
	if a.Port == b.Port || a.base == b.base {
		t.Fatalf("shared port or directory: %d %s, %d %s", a.Port, a.base, b.Port, b.base)
	}
	const sysID = "SELECT system_identifier::text FROM pg_control_system()"
	idA, idB := queryString(t, ctx, a.URL, sysID), queryString(t, ctx, b.URL, sysID)
	if idA == idB {
		t.Fatalf("both servers have system identifier %s", idA)
	}
	for _, p := range []*Postgres{a, b} {
		if got := queryString(t, ctx, p.URL, "SHOW wal_level"); got != "logical" {
			t.Fatalf("port %d: wal_level = %q", p.Port, got)
		}
	}

	// A start whose port another server already answers on must not take
	// that server for its own.
	wantBusyStart(t, ctx, b, a.Port)
	if got := queryString(t, ctx, b.URL, sysID); got != idB {
		t.Fatalf("after restart: system identifier %s, want %s", got, idB)
	}
}

// wantBusyStart crashes p, wants a start of it on port (taken) to fail as
// busy, and restarts it on its own port.
func wantBusyStart(t *testing.T, ctx context.Context, p *Postgres, port int) {
	t.Helper()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	own := p.Port
	p.mu.Lock()
	p.Port = port
	busy, err := p.start(ctx)
	p.Port = own
	p.mu.Unlock()
	if err == nil || !busy {
		t.Fatalf("postgres on taken port %d: busy %v, err %v", port, busy, err)
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
}
