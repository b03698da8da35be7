package main

import (
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/cdcd/cdcd/rules"
	"github.com/cdcd/cdcd/sinks"
)

// aclCommands are the commands cdcd sends to Redis in every mode. Redis
// checks the commands a script calls, and the keys they touch, against the
// user as well: those are here too.
var aclCommands = []string{
	// Connection set-up by go-redis: HELLO 2 carries the credentials (AUTH
	// on servers without HELLO). Redis lets every user run both; they are
	// listed because cdcd sends them. go-redis's CLIENT SETINFO is left out:
	// go-redis ignores its refusal, and Redis before 7.2 rejects the whole
	// line if it names that subcommand.
	"+hello", "+auth",
	// A database number in CDCD_REDIS_URL. Key patterns apply in every
	// database alike.
	"+select",
	// The readiness probe.
	"+ping",
	// Key patterns and templated revisions. SCAN is not limited by key
	// patterns, but cdcd only ever scans with MATCH of a section's pattern.
	"+scan",
	// Invalidation, and channel messages.
	"+unlink", "+publish",
	// The revision and state scripts: EVALSHA first, EVAL when the server
	// has not cached the script (a pipeline of revisions uses EVAL).
	"+evalsha", "+eval",
	// Revisions (GET and SET in the script; SET alone for a gap's reset),
	// and the slot's marker; INCR counts cdcd's writes to each master.
	"+get", "+set", "+incr",
	// The slot's recorded state: read with HGETALL and EXISTS, compared and
	// moved with HMGET, HGET and HSET in scripts.
	"+hgetall", "+exists", "+hmget", "+hget", "+hset",
	// CDCD_REDIS_WAIT_REPLICAS: WAIT after the markers, on their connection.
	"+wait",
}

// aclModeCommands are what each Redis mode adds to aclCommands.
var aclModeCommands = map[string][]string{
	"standalone": nil,
	// go-redis's cluster client learns the slot map with CLUSTER SLOTS and
	// how to route each command with COMMAND, and follows ASK redirections
	// during resharding with ASKING; READONLY is sent on connections that
	// read from replicas. SHARDS and NODES list the masters to scan and to
	// check after a failover; SPUBLISH sends sharded channel messages;
	// WAIT and INFO (replication) confirm and check what replicas hold.
	"cluster": {"+cluster|slots", "+cluster|shards", "+cluster|nodes", "+command", "+asking", "+readonly",
		"+spublish", "+info"},
	// Sentinel itself is asked by go-redis on the Sentinel instances, under
	// their own users. On the data nodes: WAIT for replicas, and INFO
	// (replication) to tell a failover that lost writes.
	"sentinel": {"+info"},
}

// aclModes are the modes in the order usage lists them.
var aclModes = []string{"standalone", "cluster", "sentinel"}

// aclSetUser returns the arguments of an ACL SETUSER command that grants
// user exactly what cdcd needs for the rules in f under the Redis mode: the
// commands cdcd sends, the key patterns the rules' templates can produce
// plus cdcd's own keys, and the rules' channels. It sets no password.
func aclSetUser(f *rules.File, user, mode string) ([]string, error) {
	extra, ok := aclModeCommands[mode]
	if !ok {
		return nil, fmt.Errorf("unknown mode %q (want %s)", mode, strings.Join(aclModes, ", "))
	}
	if user == "" || aclUnsafe(user) {
		return nil, fmt.Errorf("user name %q: Redis user names cannot be empty or contain spaces", user)
	}
	// resetchannels: on Redis 6.2, reset grants every channel.
	args := []string{"ACL", "SETUSER", user, "reset", "on", "resetchannels"}
	args = append(args, aclCommands...)
	args = append(args, extra...)
	var keys, channels []string
	for _, s := range f.Sections {
		for _, t := range s.Keys {
			keys = append(keys, t.Pattern())
		}
		if s.Revision != nil {
			keys = append(keys, s.Revision.Pattern())
		}
		if s.Channel != "" {
			channels = append(channels, rules.GlobEscape(s.Channel))
		}
	}
	keys = append(keys, sinks.OwnKeyPattern)
	args = append(args, aclPatterns("~", keys)...)
	return append(args, aclPatterns("&", channels)...), nil
}

// aclPatterns prefixes each distinct pattern, in order. Redis refuses
// whitespace and NUL in ACL patterns, so each such byte becomes '?', which
// matches it (and any other byte there): the grant is a little wider, never
// narrower, than the key or channel.
func aclPatterns(prefix string, patterns []string) []string {
	var out []string
	seen := make(map[string]bool)
	for _, p := range patterns {
		if aclUnsafe(p) {
			b := []byte(p)
			for i, c := range b {
				if aclSpace(c) {
					b[i] = '?'
				}
			}
			p = string(b)
		}
		if !seen[p] {
			seen[p] = true
			out = append(out, prefix+p)
		}
	}
	return out
}

// aclSpace reports whether Redis refuses c in ACL user names and patterns
// (C's isspace, and NUL).
func aclSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\v', '\f', '\r', 0:
		return true
	}
	return false
}

func aclUnsafe(s string) bool {
	for i := 0; i < len(s); i++ {
		if aclSpace(s[i]) {
			return true
		}
	}
	return false
}

// redisCommandLine formats args as one line redis-cli reads back into the
// same arguments: plain when that is safe, else in double quotes with
// backslash escapes (redis-cli treats quotes anywhere in a word as the
// start of a quoted part).
func redisCommandLine(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && !strings.ContainsFunc(a, func(r rune) bool { return r == '"' || r == '\'' || r < 0x20 || r == 0x7f }) {
			b.WriteString(a)
			continue
		}
		b.WriteByte('"')
		for j := 0; j < len(a); j++ {
			switch c := a[j]; {
			case c == '"' || c == '\\':
				b.WriteByte('\\')
				b.WriteByte(c)
			case c < 0x20 || c == 0x7f:
				fmt.Fprintf(&b, `\x%02x`, c)
			default:
				b.WriteByte(c)
			}
		}
		b.WriteByte('"')
	}
	return b.String()
}

// rulesACL prints the ACL SETUSER line for a rules file.
func rulesACL(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules acl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	user := fs.String("user", "cdcd", "the Redis user cdcd logs in as")
	mode := fs.String("mode", "standalone", "the Redis mode: "+strings.Join(aclModes, ", "))
	if err := fs.Parse(interspersed(fs, args)); err != nil {
		return exitUsage
	}
	if fs.NArg() > 1 {
		fmt.Fprintf(stderr, "cdcd rules acl: too many arguments\n%s", usage)
		return exitUsage
	}
	rs, err := rules.Load(rulesPath(fs.Args()))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitFailure
	}
	line, err := aclSetUser(rs.File(), *user, *mode)
	if err != nil {
		fmt.Fprintf(stderr, "cdcd rules acl: %v\n", err)
		return exitUsage
	}
	fmt.Fprintln(stdout, redisCommandLine(line))
	return exitOK
}
