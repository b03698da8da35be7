package main

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cdcd/cdcd/rules"
	"github.com/cdcd/cdcd/sinks"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/kelseyhightower/envconfig"
	"github.com/redis/go-redis/v9"
)

// Config is the daemon's configuration, read from CDCD_* environment
// variables. The first block is the contract in design.md; the rest are
// extensions documented in the README.
type Config struct {
	DatabaseURL string `envconfig:"DATABASE_URL"`
	RedisURL    string `envconfig:"REDIS_URL" default:"redis://127.0.0.1:6379/0"`
	RedisMode   string `envconfig:"REDIS_MODE" default:"standalone"`

	RedisTLSCAFile   string        `envconfig:"REDIS_TLS_CA_FILE"`
	RedisTLSCertFile string        `envconfig:"REDIS_TLS_CERT_FILE"`
	RedisTLSKeyFile  string        `envconfig:"REDIS_TLS_KEY_FILE"`
	RedisWait        int           `envconfig:"REDIS_WAIT_REPLICAS" default:"0"`
	RedisWaitTimeout time.Duration `envconfig:"REDIS_WAIT_TIMEOUT" default:"1s"`
	RedisSPublish    bool          `envconfig:"REDIS_SHARDED_PUBSUB" default:"false"`

	PatternWorkers  int           `envconfig:"PATTERN_WORKERS" default:"2"`
	ScanCount       int64         `envconfig:"SCAN_COUNT" default:"250"`
	PatternQueue    int           `envconfig:"PATTERN_QUEUE" default:"64"`
	PatternLagLimit time.Duration `envconfig:"PATTERN_LAG_LIMIT" default:"5m"`
	RulesFile       string        `envconfig:"RULES_FILE" default:"rules.json"`
	Slot            string        `envconfig:"SLOT" default:"cdcd"`
	Publication     string        `envconfig:"PUBLICATION" default:"cdcd"`
	HTTPAddr        string        `envconfig:"HTTP_ADDR" default:":9380"`
	LogLevel        string        `envconfig:"LOG_LEVEL" default:"info"`
	LogFormat       string        `envconfig:"LOG_FORMAT" default:"json"`

	StatusInterval time.Duration `envconfig:"STATUS_INTERVAL" default:"10s"`
	// SilenceTimeout: 0 derives it from the server's wal_sender_timeout.
	SilenceTimeout  time.Duration `envconfig:"REPLICATION_SILENCE_TIMEOUT" default:"0"`
	ShutdownTimeout time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"5s"`
	Instance        string        `envconfig:"INSTANCE"`

	RulesPoll  time.Duration `envconfig:"RULES_POLL" default:"1s"`
	MaxTxKeys  int           `envconfig:"MAX_TX_KEYS" default:"100000"`
	MaxTxBytes int64         `envconfig:"MAX_TX_BYTES" default:"33554432"`
	ApplyRate  int           `envconfig:"APPLY_RATE" default:"500"`

	LagWarnBytes int64         `envconfig:"LAG_WARN_BYTES" default:"1073741824"`
	WALPoll      time.Duration `envconfig:"WAL_POLL" default:"10s"`

	Pprof bool `envconfig:"PPROF" default:"false"`
	// RawSockets: socket I/O of the replication and Redis connections as
	// raw system calls (internal/pollconn; docs/performance.md).
	RawSockets bool `envconfig:"RAW_SOCKETS" default:"true"`

	AlertWebhookURL string `envconfig:"ALERT_WEBHOOK_URL"`
	AlertBuffer     int    `envconfig:"ALERT_BUFFER" default:"1000"`
}

var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// loadConfig reads the environment and validates every value before
// anything connects. The error has one line per bad variable.
func loadConfig() (*Config, error) {
	var c Config
	if err := envconfig.Process("cdcd", &c); err != nil {
		var pe *envconfig.ParseError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("%s: %q is not a valid %s", pe.KeyName, pe.Value, describeType(pe.TypeName))
		}
		return nil, err
	}
	return &c, c.validate()
}

func describeType(t string) string {
	if t == "time.Duration" || t == "Duration" {
		return "duration (for example 10s, 1m)"
	}
	return t
}

func (c *Config) validate() error {
	var errs []error
	bad := func(variable, format string, args ...any) {
		errs = append(errs, fmt.Errorf("CDCD_%s: %s", variable, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.DatabaseURL) == "" {
		bad("DATABASE_URL", "required: the libpq URL or DSN of the source database, e.g. postgres://cdcd@db:5432/app")
	} else if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
		bad("DATABASE_URL", "not a valid libpq URL or DSN: %s", redact(err.Error(), c.DatabaseURL))
	}
	c.validateRedis(bad)
	if strings.TrimSpace(c.RulesFile) == "" {
		bad("RULES_FILE", "empty: the path of the rules file")
	}
	if !slotName.MatchString(c.Slot) {
		bad("SLOT", "%q is not a valid slot name: 1 to 63 lower-case letters, digits and underscores", c.Slot)
	}
	if c.Publication == "" || len(c.Publication) > 63 {
		bad("PUBLICATION", "%q is not a valid publication name: 1 to 63 characters", c.Publication)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		bad("HTTP_ADDR", "%q is not host:port (for example :9380 or 127.0.0.1:9380)", c.HTTPAddr)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("LOG_FORMAT", "%q is not one of json, text", c.LogFormat)
	}
	if c.StatusInterval < 100*time.Millisecond || c.StatusInterval > 10*time.Second {
		bad("STATUS_INTERVAL", "%s is outside 100ms..10s", c.StatusInterval)
	}
	if c.SilenceTimeout < 0 {
		bad("REPLICATION_SILENCE_TIMEOUT", "%s must be 0 (derived from the server's wal_sender_timeout) or positive", c.SilenceTimeout)
	}
	if c.PatternWorkers < 1 {
		bad("PATTERN_WORKERS", "%d must be at least 1", c.PatternWorkers)
	}
	if c.ScanCount < 1 {
		bad("SCAN_COUNT", "%d must be at least 1", c.ScanCount)
	}
	if c.PatternQueue < 1 {
		bad("PATTERN_QUEUE", "%d must be at least 1", c.PatternQueue)
	}
	if c.PatternLagLimit <= 0 {
		bad("PATTERN_LAG_LIMIT", "%s must be positive", c.PatternLagLimit)
	}
	if c.LagWarnBytes < 1 {
		bad("LAG_WARN_BYTES", "%d must be positive", c.LagWarnBytes)
	}
	if c.WALPoll < 100*time.Millisecond {
		bad("WAL_POLL", "%s is shorter than 100ms", c.WALPoll)
	}
	if c.MaxTxKeys < 1 {
		bad("MAX_TX_KEYS", "%d must be at least 1", c.MaxTxKeys)
	}
	if c.MaxTxBytes < 64<<10 {
		bad("MAX_TX_BYTES", "%d must be at least 65536", c.MaxTxBytes)
	}
	if c.RulesPoll < 50*time.Millisecond {
		bad("RULES_POLL", "%s is shorter than 50ms", c.RulesPoll)
	}
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT", "%s must be positive", c.ShutdownTimeout)
	}
	if c.AlertWebhookURL != "" {
		if u, err := url.Parse(c.AlertWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("ALERT_WEBHOOK_URL", "not an http:// or https:// URL (for Alertmanager: http://alertmanager:9093/api/v2/alerts)")
		}
	}
	if c.ApplyRate < 0 {
		bad("APPLY_RATE", "%d must be 0 (no cap) or more", c.ApplyRate)
	}
	if c.AlertBuffer < 1 {
		bad("ALERT_BUFFER", "%d must be at least 1", c.AlertBuffer)
	}
	if c.Instance == "" {
		c.Instance, _ = os.Hostname()
	}
	return errors.Join(errs...)
}

// validateRedis checks the Redis variables: the URL as the mode's parser
// reads it, the TLS files, the WAIT settings.
func (c *Config) validateRedis(bad func(variable, format string, args ...any)) {
	var err error
	switch c.RedisMode {
	case sinks.ModeStandalone:
		_, err = redis.ParseURL(c.RedisURL)
		if err != nil {
			bad("REDIS_URL", "not a valid Redis URL (redis://[user:password@]host:port/db or rediss://…): %s", redact(err.Error(), c.RedisURL))
		}
	case sinks.ModeCluster:
		_, err = redis.ParseClusterURL(c.RedisURL)
		if err != nil {
			bad("REDIS_URL", "not a valid Redis Cluster URL for CDCD_REDIS_MODE=cluster (redis://[user:password@]host1:port1?addr=host2:port2&addr=…): %s", redact(err.Error(), c.RedisURL))
		}
	case sinks.ModeSentinel:
		var opt *redis.FailoverOptions
		opt, err = redis.ParseFailoverURL(c.RedisURL)
		switch {
		case err != nil:
			bad("REDIS_URL", "not a valid Sentinel URL for CDCD_REDIS_MODE=sentinel (redis://[user:password@]sentinel1:26379?master_name=NAME&addr=sentinel2:26379&…): %s", redact(err.Error(), c.RedisURL))
		case opt.MasterName == "":
			bad("REDIS_URL", "CDCD_REDIS_MODE=sentinel needs master_name in the URL (redis://sentinel1:26379?master_name=NAME&addr=sentinel2:26379)")
		}
	default:
		bad("REDIS_MODE", "%q is not one of standalone, cluster, sentinel", c.RedisMode)
		return
	}
	files := map[string]string{"REDIS_TLS_CA_FILE": c.RedisTLSCAFile, "REDIS_TLS_CERT_FILE": c.RedisTLSCertFile, "REDIS_TLS_KEY_FILE": c.RedisTLSKeyFile}
	for _, v := range []string{"REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE"} {
		path := files[v]
		if path == "" {
			continue
		}
		if !strings.HasPrefix(c.RedisURL, "rediss://") {
			bad(v, "set, but CDCD_REDIS_URL is not a rediss:// URL: the connection would not use TLS")
		} else if _, err := os.Stat(path); err != nil {
			bad(v, "%v", err)
		}
	}
	if (c.RedisTLSCertFile == "") != (c.RedisTLSKeyFile == "") {
		bad("REDIS_TLS_CERT_FILE", "a client certificate needs both CDCD_REDIS_TLS_CERT_FILE and CDCD_REDIS_TLS_KEY_FILE")
	}
	if c.RedisWait < 0 {
		bad("REDIS_WAIT_REPLICAS", "%d must be 0 (do not wait) or more", c.RedisWait)
	}
	if c.RedisWaitTimeout <= 0 {
		bad("REDIS_WAIT_TIMEOUT", "%s must be positive", c.RedisWaitTimeout)
	}
}

// redact replaces the password of connection string conn wherever it
// appears in msg.
func redact(msg, conn string) string {
	for _, pw := range passwords(conn) {
		msg = strings.ReplaceAll(msg, pw, "xxxxx")
	}
	return msg
}

// passwords extracts the password from a URL or a key=value DSN.
func passwords(conn string) []string {
	var out []string
	if u, err := url.Parse(conn); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			out = append(out, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
		if pw := u.Query().Get("password"); pw != "" {
			out = append(out, pw)
		}
	}
	if i := strings.Index(conn, "password="); i >= 0 {
		rest := conn[i+len("password="):]
		if strings.HasPrefix(rest, "'") {
			if j := strings.Index(rest[1:], "'"); j >= 0 {
				rest = rest[1 : j+1]
			}
		} else if j := strings.IndexAny(rest, " &"); j >= 0 {
			rest = rest[:j]
		}
		if rest != "" {
			out = append(out, rest)
		}
	}
	// Longest first, so a password is not half-replaced by one of its parts.
	slices.SortStableFunc(out, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	return out
}

// ruleOptions are the rules options the configuration sets.
func (c *Config) ruleOptions() []rules.Option {
	return []rules.Option{rules.WithMaxTxKeys(c.MaxTxKeys), rules.WithMaxTxBytes(c.MaxTxBytes)}
}
