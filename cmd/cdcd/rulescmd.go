package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cdcd/cdcd/catalog"
	"github.com/cdcd/cdcd/rules"
)

func runRules(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "cdcd rules: missing subcommand (check, explain, acl)\n", usage)
		return exitUsage
	}
	switch args[0] {
	case "check":
		return rulesCheck(args[1:], stdout, stderr)
	case "explain":
		return rulesExplain(args[1:], stdout, stderr)
	case "acl":
		return rulesACL(args[1:], stdout, stderr)
	default:
		fmt.Fprintf(stderr, "cdcd rules: unknown subcommand %q\n%s", args[0], usage)
		return exitUsage
	}
}

// rulesCheck validates a rules file: offline, then against the live
// catalog when CDCD_DATABASE_URL is set. One line per problem; exit 1 on
// errors (and on warnings with --strict).
func rulesCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	strict := fs.Bool("strict", false, "fail on warnings too")
	if err := fs.Parse(interspersed(fs, args)); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "cdcd rules check: too many arguments\n%s", usage)
		return exitUsage
	}
	path := rulesPath(fs.Args())
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
	warns := readerAdvice(f, path, stdout)
	live := ""
	if dbURL := os.Getenv("CDCD_DATABASE_URL"); dbURL != "" {
		findings, err := checkLive(context.Background(), dbURL, envOr("CDCD_PUBLICATION", "cdcd"), f)
		if err != nil {
			fmt.Fprintf(stdout, "%s: cannot check against the database: %s\n", path, redact(err.Error(), dbURL))
			return exitFailure
		}
		errs, liveWarns := 0, 0
		for _, fd := range findings {
			fmt.Fprintln(stdout, fd.Format(path))
			switch fd.Severity {
			case catalog.Error:
				errs++
			case catalog.Warning:
				liveWarns++
			}
		}
		if errs > 0 {
			return exitFailure
		}
		warns += liveWarns
		live = fmt.Sprintf(", checked against the database (%d warnings)", liveWarns)
	}
	if *strict && warns > 0 {
		return exitFailure
	}
	fmt.Fprintf(stdout, "%s: ok: %d sections, %d rules, %d invariants over %d tables%s\n",
		path, len(f.Sections), len(f.Rules), len(f.Invariants), len(rs.Tables()), live)
	return exitOK
}

// interspersed moves flags after positional arguments to the front, so
// "check FILE --strict" works like "check --strict FILE".
func interspersed(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if f := fs.Lookup(name); f != nil && !strings.Contains(a, "=") {
				if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); !isBool && i+1 < len(args) {
					flags = append(flags, args[i+1])
					i++
				}
			}
			continue
		}
		pos = append(pos, a)
	}
	return append(flags, pos...)
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

// readerAdvice prints what the rules imply for read-through readers
// (docs/consistency.md) and returns the number of warnings among it.
func readerAdvice(f *rules.File, path string, stdout io.Writer) int {
	warnings := 0
	for _, a := range f.ReaderAdvice() {
		sev := catalog.Note
		if !a.Note {
			sev = catalog.Warning
			warnings++
		}
		fmt.Fprintln(stdout, catalog.Finding{Severity: sev, Pos: a.Pos, Msg: a.Msg}.Format(path))
	}
	return warnings
}
