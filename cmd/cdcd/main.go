// Command cdcd keeps Redis caches consistent with a PostgreSQL database by
// consuming its logical replication stream. See the README for operation.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure, or rules check found problems
	exitUsage   = 2 // bad configuration or command line
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `usage:
  cdcd [run]                      run the daemon (configured by CDCD_* variables)
  cdcd rules check [FILE] [--strict]
                                  validate a rules file (default $CDCD_RULES_FILE or rules.json)
  cdcd rules explain [FILE] --table T --op OP [--old JSON] [--new JSON] [--json]
                                  what a change would invalidate, without touching anything
  cdcd rules explain [FILE] --peek [--slot S] [--limit N]
                                  the same for the transactions waiting in a slot
  cdcd rules acl [FILE] [--user NAME] [--mode standalone|cluster|sentinel]
                                  the Redis ACL SETUSER line granting what cdcd needs (append >password)
  cdcd healthcheck [--ready]      probe a running daemon's /healthz (or /readyz); exit 0 when healthy
  cdcd version                    print the version
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return runDaemon(ctx, stderr)
	}
	switch args[0] {
	case "run":
		if len(args) > 1 {
			fmt.Fprintf(stderr, "cdcd run: unexpected argument %q\n%s", args[1], usage)
			return exitUsage
		}
		return runDaemon(ctx, stderr)
	case "rules":
		return runRules(args[1:], stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "cdcd", version())
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "cdcd: unknown command %q\n%s", args[0], usage)
		return exitUsage
	}
}
