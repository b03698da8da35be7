package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cdcd/cdcd/rules"
)

func runRules(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "cdcd rules: missing subcommand (check)\n", usage)
		return exitUsage
	}
	switch args[0] {
	case "check":
		return rulesCheck(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "cdcd rules: unknown subcommand %q\n%s", args[0], usage)
		return exitUsage
	}
}

// rulesCheck validates a rules file offline: one line per problem, exit 1.
func rulesCheck(args []string, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		fmt.Fprintf(stderr, "cdcd rules check: too many arguments\n%s", usage)
		return exitUsage
	}
	path := rulesPath(args)
	rs, err := rules.Load(path)
	if err != nil {
		var pe *rules.ParseError
		if errors.As(err, &pe) {
			for _, p := range pe.Problems {
				fmt.Fprintln(stdout, p)
			}
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s: %v\n", path, err)
		return exitFailure
	}
	f := rs.File()
	fmt.Fprintf(stdout, "%s: ok: %d sections, %d rules, %d invariants over %d tables\n",
		path, len(f.Sections), len(f.Rules), len(f.Invariants), len(rs.Tables()))
	return exitOK
}

// rulesPath is the file named on the command line, else CDCD_RULES_FILE,
// else rules.json.
func rulesPath(args []string) string {
	if len(args) > 0 {
		return args[0]
	}
	if p := os.Getenv("CDCD_RULES_FILE"); p != "" {
		return p
	}
	return "rules.json"
}
