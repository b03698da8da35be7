package testenv

import (
	"context"
	"testing"
	"time"
)

// The extra arguments reach the server, and survive a restart.
func TestStartRedisWithArgs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Setenv(envRedisURL, "")
	r, err := StartRedis(ctx, WithArgs("--maxmemory-policy", "allkeys-lru"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	for round := range 2 {
		got, err := r.Do(ctx, "CONFIG", "GET", "maxmemory-policy")
		if err != nil || got != "maxmemory-policy\nallkeys-lru" {
			t.Fatalf("round %d: CONFIG GET = %q, %v", round, got, err)
		}
		if err := r.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
