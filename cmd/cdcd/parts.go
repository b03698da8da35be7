package main

import (
	"github.com/cdcd/cdcd/replication"
	"github.com/cdcd/cdcd/rules"
)

// streamedTx hands a rules.Builder to the replication package, whose
// Merger still takes an untyped Tx. Merge is only ever handed another
// streamedTx (replication merges what Begin returned): anything else is a
// programming error and panics rather than merging nothing.
type streamedTx struct{ *rules.Builder }

var _ replication.Merger = streamedTx{}

func (t streamedTx) Merge(later replication.Tx) { t.Builder.Merge(later.(streamedTx).Builder) }

// ruleOptions are the rules options the configuration sets.
func (c *Config) ruleOptions() []rules.Option {
	return []rules.Option{rules.WithMaxTxKeys(c.MaxTxKeys), rules.WithMaxTxBytes(c.MaxTxBytes)}
}
