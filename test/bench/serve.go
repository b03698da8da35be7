package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// serve keeps the private servers running, with the reference schema, until
// interrupted: for profiling by hand.
func (b *bench) serve() error {
	fmt.Printf("CDCD_DATABASE_URL=%s\nCDCD_REDIS_URL=%s\nCDCD_RULES_FILE=%s\n", b.dbURL, b.rds.URL, filepath.Join(b.repo, "rules.json"))
	ctx, stop := signal.NotifyContext(b.ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
