package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cdcd/cdcd/catalog"
	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pgx/v5"
)

// publicationError lists what a publication hides from the rules, or the
// rule tables whose writes it makes fail: a problem only a DBA can fix.
type publicationError struct {
	publication string
	problems    []string // one finding each, FILE:LINE:COL first
}

func (e *publicationError) Error() string {
	return fmt.Sprintf("publication %s does not fit the rules: %s", e.publication, strings.Join(e.problems, "; "))
}

// Unwrap classifies the error as a configuration problem: the stream stops
// and the daemon exits 2.
func (e *publicationError) Unwrap() error { return replication.ErrConfig }

// checkPublication runs before every replication session: cdcd does not
// stream from a publication that hides changes its rules need, nor with a
// rule table whose UPDATE and DELETE the publication makes fail.
func (d *daemon) checkPublication(ctx context.Context) error {
	err := checkRulesPublication(ctx, d.cfg.DatabaseURL, d.cfg.Publication, d.rules.Load().File())
	var pe *publicationError
	if errors.As(err, &pe) {
		for _, p := range pe.problems {
			d.log.Error("publication hides changes the rules need or breaks the application's writes; not streaming",
				"publication", d.cfg.Publication, "problem", p)
		}
	}
	return err
}

// admitRules checks reloaded rules against the publication before they
// replace the rules in use, as the start of a session would: rules the
// daemon would refuse to start with are rejected. When the database does
// not answer, rules that add no table are taken (the next session checks
// them); rules that add tables are not, since cdcd could not tell whether
// adding them breaks the application's writes.
func (d *daemon) admitRules(rs *rules.Rules) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := checkRulesPublication(ctx, d.cfg.DatabaseURL, d.cfg.Publication, rs.File())
	if err == nil || errors.Is(err, replication.ErrConfig) {
		return err
	}
	if added := newTables(d.rules.Load().Tables(), rs.Tables()); len(added) > 0 {
		return fmt.Errorf("cannot check the new tables %s against the publication: %w", strings.Join(added, ", "), err)
	}
	d.log.Warn("cannot check the reloaded rules against the publication; the next replication session will", "err", err)
	return nil
}

// checkRulesPublication runs catalog.CheckPublication for f: a
// *publicationError when it finds a problem, another error when the
// database did not answer.
func checkRulesPublication(ctx context.Context, dbURL, publication string, f *rules.File) error {
	findings, err := withCatalog(ctx, dbURL, publication, f, catalog.CheckPublication)
	if err != nil {
		return fmt.Errorf("check publication %s: %s", publication, redact(err.Error(), dbURL))
	}
	pe := &publicationError{publication: publication}
	for _, fd := range findings {
		if fd.Severity == catalog.Error {
			pe.problems = append(pe.problems, fd.Format(f.Name))
		}
	}
	if len(pe.problems) > 0 {
		return pe
	}
	return nil
}

type catalogCheck func(context.Context, catalog.Querier, *rules.File, string) ([]catalog.Finding, error)

// withCatalog runs check over its own connection to the database.
func withCatalog(ctx context.Context, dbURL, publication string, f *rules.File, check catalogCheck) ([]catalog.Finding, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dbURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return check(cctx, conn, f, publication)
}
