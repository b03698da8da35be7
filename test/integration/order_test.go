package integration

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// indexOf returns the position of the first command whose name is name
// (case-insensitive) and whose arguments include arg, or -1.
func indexOf(cmds [][]string, name, arg string) int {
	return slices.IndexFunc(cmds, func(c []string) bool {
		return len(c) > 0 && strings.EqualFold(c[0], name) && slices.Contains(c[1:], arg)
	})
}

// A covering revision moves before the keys it covers are deleted — for
// exact keys and for patterns — so that a reader that read the revision
// and then the database before the commit cannot store its stale value
// under the revision it read.
func TestRevisionMovesBeforeItsKeysAreDeleted(t *testing.T) {
	e := newEnv(t)
	e.startDaemon()
	e.set("state:summary:core", "impact:1:v1", "impact:1:v2")
	insertImpactFunction(e, 1) // id 1 in a fresh database
	time.Sleep(300 * time.Millisecond)
	e.set("impact:1:rev", "impact:1:v1")

	mon := startMonitor(t)
	_, end := e.write(`INSERT INTO topics (title) VALUES ('t')`)
	e.waitConfirmed(end, 10*time.Second)
	cmds := mon.stop()
	rev, del := indexOf(cmds, "EVAL", "state:summary:rev:core"), indexOf(cmds, "UNLINK", "state:summary:core")
	if rev < 0 || del < 0 || rev > del {
		t.Fatalf("revision set at command %d, key unlinked at %d: the revision must move first\n%q", rev, del, cmds)
	}

	// A pattern: an UPDATE of the key column under REPLICA IDENTITY DEFAULT
	// leaves the old version unknown.
	e.exec(`ALTER TABLE impact_functions REPLICA IDENTITY DEFAULT`)
	mon = startMonitor(t)
	_, end = e.write(`UPDATE impact_functions SET name = 'g' WHERE id = 1`)
	e.waitConfirmed(end, 10*time.Second)
	cmds = mon.stop()
	rev = indexOf(cmds, "EVAL", "impact:1:rev")
	scan := slices.IndexFunc(cmds, func(c []string) bool {
		return len(c) > 3 && strings.EqualFold(c[0], "SCAN") && strings.HasPrefix(c[3], "impact:")
	})
	if rev < 0 || scan < 0 || rev > scan {
		t.Fatalf("revision set at command %d, pattern scanned at %d: the revision must move first\n%q", rev, scan, cmds)
	}
	if e.exists("impact:1:v1") {
		t.Fatal("the pattern did not delete impact:1:v1")
	}
}
