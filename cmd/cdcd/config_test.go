package main

import (
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Setenv("CDCD_DATABASE_URL", "postgres://cdcd@db/app")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.RedisURL != "redis://127.0.0.1:6379/0" || c.RulesFile != "rules.json" || c.Slot != "cdcd" ||
		c.Publication != "cdcd" || c.HTTPAddr != ":9380" || c.LogLevel != "info" || c.LogFormat != "json" {
		t.Errorf("defaults differ from the contract: %+v", c)
	}
}

func TestLoadConfigReportsEveryBadVariable(t *testing.T) {
	t.Setenv("CDCD_DATABASE_URL", "")
	t.Setenv("CDCD_REDIS_URL", "memcached://x")
	t.Setenv("CDCD_SLOT", "bad-slot")
	t.Setenv("CDCD_HTTP_ADDR", "9380")
	t.Setenv("CDCD_LOG_FORMAT", "xml")
	_, err := loadConfig()
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"CDCD_DATABASE_URL", "CDCD_REDIS_URL", "CDCD_SLOT", "CDCD_HTTP_ADDR", "CDCD_LOG_FORMAT"}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w+":") {
			t.Errorf("line %d = %q, want it to name %s", i, lines[i], w)
		}
	}
}

func TestRedact(t *testing.T) {
	cases := []struct{ msg, conn string }{
		{"cannot parse postgres://u:s%40cret@h/db", "postgres://u:s%40cret@h/db"},
		{"bad dsn host=h password=s3cret user=u", "host=h password=s3cret user=u"},
		{"bad dsn password='s3 cret' host=h", "password='s3 cret' host=h"},
		{"redis://:tok3n@h:6379/x failed", "redis://:tok3n@h:6379/x"},
	}
	for _, c := range cases {
		got := redact(c.msg, c.conn)
		for _, secret := range []string{"s@cret", "s%40cret", "s3cret", "s3 cret", "tok3n"} {
			if strings.Contains(got, secret) {
				t.Errorf("redact(%q) = %q still holds %q", c.msg, got, secret)
			}
		}
	}
}

func TestLoadConfigMaxTxBytes(t *testing.T) {
	t.Setenv("CDCD_DATABASE_URL", "postgres://cdcd@db/app")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxTxBytes != rules.DefaultMaxTxBytes {
		t.Errorf("CDCD_MAX_TX_BYTES defaults to %d, rules to %d", c.MaxTxBytes, rules.DefaultMaxTxBytes)
	}
	t.Setenv("CDCD_MAX_TX_BYTES", "1000")
	if _, err := loadConfig(); err == nil || !strings.HasPrefix(err.Error(), "CDCD_MAX_TX_BYTES:") {
		t.Errorf("a budget of 1000 bytes: %v", err)
	}
}

func TestRawSocketsSetting(t *testing.T) {
	t.Setenv("CDCD_DATABASE_URL", "postgres://cdcd@db/app")
	c, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !c.RawSockets {
		t.Error("CDCD_RAW_SOCKETS unset: off, want on by default")
	}
	t.Setenv("CDCD_RAW_SOCKETS", "false")
	if c, err = loadConfig(); err != nil {
		t.Fatal(err)
	}
	if c.RawSockets {
		t.Error("CDCD_RAW_SOCKETS=false: still on")
	}
}

// A Redis mode and a URL that do not fit, and TLS files without TLS, stop
// start-up with a line naming the variable.
func TestRedisModeAndURLMustFit(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		env        map[string]string
	}{
		{"unknown mode", "CDCD_REDIS_MODE:", map[string]string{"CDCD_REDIS_MODE": "ring"}},
		{"sentinel without master_name", "CDCD_REDIS_URL:", map[string]string{
			"CDCD_REDIS_MODE": "sentinel", "CDCD_REDIS_URL": "redis://s1:26379?addr=s2:26379"}},
		{"a Sentinel URL in cluster mode", "CDCD_REDIS_URL:", map[string]string{
			"CDCD_REDIS_MODE": "cluster", "CDCD_REDIS_URL": "redis://s1:26379?master_name=m&addr=s2:26379"}},
		{"TLS files without rediss", "CDCD_REDIS_TLS_CA_FILE:", map[string]string{
			"CDCD_REDIS_TLS_CA_FILE": "/dev/null"}},
		{"a certificate without its key", "CDCD_REDIS_TLS_CERT_FILE:", map[string]string{
			"CDCD_REDIS_URL": "rediss://h:6380/0", "CDCD_REDIS_TLS_CERT_FILE": "/dev/null"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CDCD_DATABASE_URL", "postgres://cdcd@db/app")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a line starting %q", err, tc.want)
			}
		})
	}
	t.Run("each mode with its own URL", func(t *testing.T) {
		for mode, url := range map[string]string{
			"standalone": "redis://h:6379/0",
			"cluster":    "redis://h1:6379?addr=h2:6379",
			"sentinel":   "redis://s1:26379?master_name=m&addr=s2:26379",
		} {
			t.Setenv("CDCD_DATABASE_URL", "postgres://cdcd@db/app")
			t.Setenv("CDCD_REDIS_MODE", mode)
			t.Setenv("CDCD_REDIS_URL", url)
			if _, err := loadConfig(); err != nil {
				t.Errorf("%s %s: %v", mode, url, err)
			}
		}
	})
}
