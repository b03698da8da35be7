package testenv

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestRedisACL: a server started WithACLUser lets that user do what its
// rules grant and nothing else, also after a restart.
func TestRedisACL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := MustRedis(t, WithACLUser("cdcd", "s3cret", "~cache:*", "&inval", "+get", "+set", "+unlink", "+publish", "+ping"))
	if _, err := r.Do(ctx, "SET", "other", "v"); err != nil {
		t.Fatalf("the harness, as the default user: %v", err)
	}
	opt, err := redis.ParseURL(r.UserURL("cdcd", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()

	allowed := func() {
		t.Helper()
		for _, args := range [][]any{
			{"SET", "cache:1", "v"}, {"GET", "cache:1"}, {"UNLINK", "cache:1"}, {"PUBLISH", "inval", "m"}, {"PING"},
		} {
			if err := c.Do(ctx, args...).Err(); err != nil && !errors.Is(err, redis.Nil) {
				t.Fatalf("%v: %v", args, err)
			}
		}
	}
	allowed()
	for _, args := range [][]any{
		{"GET", "other"}, {"SET", "other", "v"}, {"PUBLISH", "elsewhere", "m"},
		{"FLUSHALL"}, {"CONFIG", "GET", "port"}, {"KEYS", "*"}, {"DEL", "cache:1"},
	} {
		if err := c.Do(ctx, args...).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
			t.Errorf("%v: err = %v, want NOPERM", args, err)
		}
	}
	opt.Password = "wrong"
	bad := redis.NewClient(opt)
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("wrong password: err = %v", err)
	}

	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	allowed()

	// A rule Redis does not know fails the start, naming the user.
	if _, err := StartRedis(ctx, WithACLUser("x", "p", "+nosuchcommand")); err == nil || !strings.Contains(err.Error(), "create user x") {
		t.Fatalf("bad rule: err = %v", err)
	}
}

func TestRedisOptionsRejected(t *testing.T) {
	ctx := context.Background()
	if _, err := StartRedis(ctx, WithReplicaProxy()); err == nil {
		t.Error("StartRedis accepted WithReplicaProxy")
	}
	if _, err := StartRedisCluster(ctx, 3, 1, WithReplicaProxy()); err == nil {
		t.Error("StartRedisCluster accepted WithReplicaProxy")
	}
	if _, err := StartRedis(ctx, WithTLS(MustCA(t), "maybe")); err == nil {
		t.Error("StartRedis accepted tls-auth-clients maybe")
	}
}
