package rules

// DefaultMaxTxKeys is how many distinct keys of one section a transaction
// collects before the section escalates to its pattern.
const DefaultMaxTxKeys = 100_000

// An Option sets how compiled rules evaluate transactions. Options are fixed
// at compile time: Rules never change after.
type Option func(*options)

type options struct {
	maxTxKeys int
}

func defaultOptions() options {
	return options{maxTxKeys: DefaultMaxTxKeys}
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
