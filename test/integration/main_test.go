// Package integration runs cdcd end to end: the real binary against a
// private PostgreSQL (wal_level=logical) and Redis started by
// internal/testenv, or the servers named by CDCD_TEST_DATABASE_URL and
// CDCD_TEST_REDIS_URL.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/cdcd/cdcd/internal/testenv"
)

var (
	pg      *testenv.Postgres
	rds     *testenv.Redis
	binary  string
	repoDir string
	// stopAtExit stops servers that tests started on demand.
	stopAtExit []func()
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	repoDir = filepath.Join(filepath.Dir(file), "..", "..")

	tmp, err := os.MkdirTemp("", "cdcd-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binary = filepath.Join(tmp, "cdcd")
	build := exec.Command("go", "build", "-race", "-o", binary, "./cmd/cdcd")
	build.Dir = repoDir
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build cdcd:", err)
		return 1
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg, err = testenv.StartPostgres(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need PostgreSQL with wal_level=logical:", err)
		return 1
	}
	defer pg.Stop()
	rds, err = testenv.StartRedis(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration tests need Redis:", err)
		return 1
	}
	defer rds.Stop()
	defer func() {
		for _, stop := range stopAtExit {
			stop()
		}
	}()
	return m.Run()
}
