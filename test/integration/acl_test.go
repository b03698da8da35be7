package integration

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// aclUser creates the Redis user `cdcd rules acl` prints for e's rules,
// with a password, as an operator would, and returns the Redis URL that
// logs in as it. The user is deleted when the test ends.
func (e *env) aclUser(args ...string) string {
	e.t.Helper()
	name := fmt.Sprintf("cdcd_it_%d", os.Getpid())
	cmd := exec.Command(binary, append([]string{"rules", "acl", e.rules, "--user", name}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.Output()
	if err != nil {
		e.t.Fatalf("cdcd rules acl: %v", err)
	}
	line := strings.TrimSuffix(string(out), "\n")
	if !strings.HasPrefix(line, "ACL SETUSER "+name+" reset on ") || strings.ContainsAny(line, "\"'\n>") {
		e.t.Fatalf("cdcd rules acl printed %q", out)
	}
	// Without quotes the line is split as redis-cli splits it: on spaces.
	ctx := context.Background()
	var acl []any
	for _, a := range strings.Fields(line + " >pass") {
		acl = append(acl, a)
	}
	if err := e.rdb.Do(ctx, acl...).Err(); err != nil {
		e.t.Fatalf("%s: %v", line, err)
	}
	e.t.Cleanup(func() { e.rdb.Do(context.Background(), "ACL", "DELUSER", name) })
	u, err := url.Parse(rds.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	u.User = url.UserPassword(name, "pass")
	return u.String()
}

// cdcd does all its work as the least-privileged user `cdcd rules acl`
// describes, and that user can do nothing else.
func TestRunsUnderGeneratedACLUser(t *testing.T) {
	e := newEnv(t)
	userURL := e.aclUser()
	e.exec(`ALTER TABLE climate_runs REPLICA IDENTITY DEFAULT`)
	e.exec(`INSERT INTO climate_runs (run_id, scenario, hazard) VALUES (1, 'ssp245', 'flood')`)
	insertImpactFunction(e, 3)
	d := e.startDaemon("CDCD_REDIS_URL=" + userURL) // ready: /readyz answered 200

	// The eviction check is denied CONFIG and carries on.
	policy := d.logEntries("cannot read redis maxmemory-policy")
	if len(policy) != 1 || policy[0]["level"] != "INFO" || !strings.Contains(fmt.Sprint(policy[0]["err"]), "NOPERM") {
		t.Errorf("eviction check log: %v", policy)
	}

	// Exact keys and a literal revision.
	{
		e.set("state:summary:core")
		_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
		e.gone("state:summary:core")
		e.waitConfirmed(end, 10*time.Second)
		if e.get("state:summary:rev:core") == "" {
			t.Error("the revision state:summary:rev:core was not set")
		}
	}

	// A templated revision, moved by the script.
	{
		e.set("impact:1:v1", "impact:1:v2")
		e.write(`UPDATE impact_functions SET version = 2 WHERE id = 1`)
		e.gone("impact:1:v1", "impact:1:v2")
		waitFor(t, 5*time.Second, "revision impact:1:rev", func() bool { return e.get("impact:1:rev") != "" })
	}

	// A key pattern and a channel message.
	{
		ctx := context.Background()
		sub := e.rdb.Subscribe(ctx, "cdcd:invalidations")
		defer sub.Close()
		if _, err := sub.Receive(ctx); err != nil {
			t.Fatal(err)
		}
		e.set("nodb:1:climate", "nodb:2:climate", "unrelated:key")
		// Under REPLICA IDENTITY DEFAULT the old run_id is unknown: a SCAN of
		// nodb:*:climate.
		e.write(`UPDATE climate_runs SET run_id = 2 WHERE run_id = 1`)
		e.gone("nodb:1:climate", "nodb:2:climate")
		if !e.exists("unrelated:key") {
			t.Error("the pattern deleted a key outside the section")
		}
		select {
		case m := <-sub.Channel():
			if !strings.Contains(m.Payload, "run.climate") {
				t.Errorf("message %q does not name its section", m.Payload)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no message on cdcd:invalidations")
		}
	}

	// The user can do nothing else.
	{
		opt, err := redis.ParseURL(userURL)
		if err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(opt)
		defer c.Close()
		ctx := context.Background()
		if err := c.Get(ctx, "state:summary:progress").Err(); err != nil && err != redis.Nil {
			t.Fatalf("a key of the rules is denied: %v", err)
		}
		for _, cmd := range [][]any{
			{"FLUSHALL"},
			{"CONFIG", "SET", "maxmemory-policy", "noeviction"},
			{"CONFIG", "GET", "maxmemory-policy"},
			{"KEYS", "*"},
			{"GET", "unrelated:key"},
			{"SET", "unrelated:key", "x"},
			{"UNLINK", "unrelated:key"},
			{"PUBLISH", "another:channel", "x"},
			// Scripts run with the caller's permissions: no other command,
			// no other key.
			{"EVAL", "return redis.call('DEL', 'unrelated:key')", "0"},
			{"EVAL", "return redis.call('SET', 'unrelated:key', 'x')", "0"},
		} {
			err := c.Do(ctx, cmd...).Err()
			if err == nil || !strings.Contains(err.Error(), "NOPERM") && !strings.Contains(err.Error(), "The user executing the script can't") {
				t.Errorf("%v as the cdcd user: %v, want a permission error", cmd, err)
			}
		}
		if e.get("unrelated:key") != "cached" {
			t.Error("unrelated:key changed")
		}
	}

	// Gap invalidation: the slot dropped while cdcd was stopped.
	{
		if n := d.metric("cdcd_sink_errors_total"); n != 0 {
			t.Errorf("cdcd_sink_errors_total %v: a command was denied", n)
		}
		if code, _ := d.stop(syscall.SIGTERM, 10*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
		revBefore := e.get("impact:1:rev")
		e.set(append(sectionKeys, "unrelated")...)
		e.exec(`SELECT pg_drop_replication_slot($1)`, e.slot)
		e.write(`UPDATE climate_runs SET run_id = 3`) // never streamed

		d = e.startDaemon("CDCD_REDIS_URL=" + userURL)
		for _, k := range sectionKeys {
			waitFor(t, 5*time.Second, k+" to be invalidated", func() bool { return !e.exists(k) })
		}
		if !e.exists("unrelated") {
			t.Error("a key outside every section was deleted")
		}
		// The templated revision was found by SCAN and moved.
		if rev := e.get("impact:1:rev"); rev == revBefore {
			t.Errorf("revision impact:1:rev still %q after the gap", rev)
		}
		if n := d.metric("cdcd_gap_invalidations_total", "reason=slot_recreated"); n != 1 {
			t.Errorf("gap counter %v, want 1", n)
		}
		if n := d.metric("cdcd_sink_errors_total"); n != 0 {
			t.Errorf("cdcd_sink_errors_total %v: a command was denied", n)
		}
	}
}
