package sinks

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cdcd/cdcd/rules"
	"github.com/jackc/pglogrepl"
)

func TestSplitPatterns(t *testing.T) {
	plans := []*rules.Plan{
		{CommitLSN: 10, Keys: []rules.Key{{Key: "a"}}},
		{CommitLSN: 20, Patterns: []rules.Pattern{{Pattern: "p:*"}}, Keys: []rules.Key{{Key: "b"}}},
		{CommitLSN: 30, Revisions: []rules.Revision{{Key: "r:*", IsPattern: true}, {Key: "r:1"}}, Keys: []rules.Key{{Key: "c"}}},
		{CommitLSN: 40, Patterns: []rules.Pattern{{Pattern: "p:*"}, {Pattern: "q:*"}}},
	}
	job, skip := splitPatterns(plans)
	if job == nil || job.hold != 20 {
		t.Fatalf("job %+v: want one held at the first pattern's commit, 20", job)
	}
	if want := []bool{false, false, true, false}; !slices.Equal(skip, want) {
		t.Errorf("skip %v, want %v: exact keys wait for revision patterns only", skip, want)
	}
	if !slices.Equal(job.keys, []string{"c"}) {
		t.Errorf("job keys %v, want [c]", job.keys)
	}
	var pats []string
	for _, p := range job.patterns {
		pats = append(pats, p.Pattern)
	}
	if !slices.Equal(pats, []string{"p:*", "q:*"}) {
		t.Errorf("patterns %v, want each once", pats)
	}
	if job.revs["r:*"] != pglogrepl.LSN(30).String() || len(job.revOrder) != 1 {
		t.Errorf("revision patterns %v %v, want r:* at 30 only", job.revOrder, job.revs)
	}
	if j, _ := splitPatterns(plans[:1]); j != nil {
		t.Error("a job for plans without patterns")
	}
}

func TestPatternRunnerHoldsAndJoins(t *testing.T) {
	p := newPatternRunner(&Redis{}, 1, 2)
	ctx := context.Background()
	if got := p.confirmable(100); got != 100 {
		t.Fatalf("confirmable %d with nothing pending", got)
	}
	first := &patternJob{hold: 50, revs: map[string]string{}, patterns: []rules.Pattern{{Pattern: "a:*"}}}
	if err := p.add(ctx, first); err != nil {
		t.Fatal(err)
	}
	if got := p.confirmable(100); got != 50 {
		t.Fatalf("confirmable %d, want the pending commit 50", got)
	}
	// A later transaction joins the job that has not started.
	if err := p.add(ctx, &patternJob{hold: 70, revs: map[string]string{}, patterns: []rules.Pattern{{Pattern: "b:*"}}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.backlog(); n != 1 || len(first.patterns) != 2 {
		t.Fatalf("%d jobs, first has %v: want one job with both patterns", n, first.patterns)
	}
	// Once it started, a later one queues apart.
	if j := p.next(); j != first {
		t.Fatal("next did not start the oldest job")
	}
	if err := p.add(ctx, &patternJob{hold: 90, revs: map[string]string{}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.backlog(); n != 2 {
		t.Fatalf("%d jobs, want 2", n)
	}
	p.finish(first)
	if got := p.confirmable(100); got != 90 {
		t.Fatalf("confirmable %d after the first job, want 90", got)
	}
	if got := p.confirmable(80); got != 80 {
		t.Fatalf("confirmable %d below every hold, want 80", got)
	}
}

// Past the limit, add waits for a job to finish.
func TestPatternRunnerBacklogIsBounded(t *testing.T) {
	p := newPatternRunner(&Redis{}, 1, 1)
	ctx := context.Background()
	job := &patternJob{hold: 1, revs: map[string]string{}}
	if err := p.add(ctx, job); err != nil {
		t.Fatal(err)
	}
	p.next()
	done := make(chan error)
	go func() { done <- p.add(ctx, &patternJob{hold: 2, revs: map[string]string{}}) }()
	select {
	case err := <-done:
		t.Fatalf("add did not wait past the limit (err %v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.finish(job)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
