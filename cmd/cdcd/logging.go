package main

import (
	"io"
	"log/slog"
	"os"

	"github.com/cdcd/cdcd/sinks"
)

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated
	opts := &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.LevelKey && len(groups) == 0 {
				if l, ok := a.Value.Any().(slog.Level); ok && l >= sinks.LevelCritical {
					a.Value = slog.StringValue("CRITICAL")
				}
			}
			return a
		},
	}
	var h slog.Handler
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	log := slog.New(h)
	if cfg.Instance != "" {
		log = log.With("instance", cfg.Instance)
	}
	return log
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
