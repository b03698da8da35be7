package readthrough_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// The tests run against a private redis-server (or CDCD_TEST_REDIS_URL),
// with cdcd's side played by fakeCDCD in the order cdcd's sink keeps.
var rds *testenv.Redis

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if rds, err = testenv.StartRedis(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "readthrough tests need Redis:", err)
		return 1
	}
	defer rds.Stop()
	return m.Run()
}

// setup flushes Redis and returns a client and the path of the rules the
// tests use (shared with the Python helper's tests).
func setup(t *testing.T) (*redis.Client, string) {
	t.Helper()
	opt, err := redis.ParseURL(rds.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	if err := rdb.FlushAll(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
	return rdb, filepath.Join("testdata", "rules.json")
}

// fakeCDCD applies a commit's invalidation as cdcd's sink does: the
// revisions move first (an exact key is set, a pattern sets the revisions
// that exist), then the keys are deleted.
type fakeCDCD struct {
	t   *testing.T
	rdb *redis.Client
	lsn uint64
}

func (f *fakeCDCD) nextLSN() string {
	f.lsn += 0x100
	return fmt.Sprintf("0/%X", f.lsn)
}

// commit moves the revision keys revs and deletes keys.
func (f *fakeCDCD) commit(revs []string, keys ...string) {
	f.t.Helper()
	ctx := f.t.Context()
	lsn := f.nextLSN()
	for _, r := range revs {
		if err := f.rdb.Set(ctx, r, lsn, 0).Err(); err != nil {
			f.t.Fatal(err)
		}
	}
	if len(keys) > 0 {
		if err := f.rdb.Unlink(ctx, keys...).Err(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// commitPattern moves every existing revision matching revPattern, then
// deletes every key matching keyPattern: a truncate, an unknown old row.
func (f *fakeCDCD) commitPattern(revPattern, keyPattern string) {
	f.t.Helper()
	ctx := f.t.Context()
	lsn := f.nextLSN()
	revs, err := f.rdb.Keys(ctx, revPattern).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range revs {
		f.rdb.Set(ctx, r, lsn, 0)
	}
	keys, err := f.rdb.Keys(ctx, keyPattern).Result()
	if err != nil {
		f.t.Fatal(err)
	}
	if len(keys) > 0 {
		f.rdb.Unlink(ctx, keys...)
	}
}
