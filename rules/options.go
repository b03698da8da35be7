package rules

// DefaultMaxTxKeys is how many distinct keys of one section a transaction
// collects before the section escalates to its pattern.
const DefaultMaxTxKeys = 100_000

// DefaultMaxTxBytes is the memory budget of one transaction, over all its
// parts: keys, patterns, revisions, invariant row states.
const DefaultMaxTxBytes = 32 << 20

// An Option sets how compiled rules evaluate transactions. Options are fixed
// at compile time: Rules never change after.
type Option func(*options)

type options struct {
	maxTxKeys  int
	maxTxBytes int64
}

func defaultOptions() options {
	return options{maxTxKeys: DefaultMaxTxKeys, maxTxBytes: DefaultMaxTxBytes}
}

// WithMaxTxKeys caps the distinct keys of one section a transaction
// collects before the section escalates to its key pattern (reason
// "escalated"); the same cap applies to its revision keys. n < 1 means
// DefaultMaxTxKeys.
func WithMaxTxKeys(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxTxKeys = n
		}
	}
}

// WithMaxTxBytes bounds the memory one transaction holds, over all its parts
// (a streamed transaction's subtransactions), at about n bytes. Past it,
// the section holding the most bytes of exact keys escalates to its
// patterns (reason "escalated"), revision keys likewise; when only
// invariant row states are left, the invariant holding the most is no
// longer checked in that transaction, and Plan.Unchecked says for how many
// rows. n < 1 means DefaultMaxTxBytes.
func WithMaxTxBytes(n int64) Option {
	return func(o *options) {
		if n > 0 {
			o.maxTxBytes = n
		}
	}
}
