package readthrough

import "errors"

var (
	// ErrNoSection: no section of the rules file names the key, so nothing
	// guards it.
	ErrNoSection = errors.New("no section of the rules names the key")
	// ErrUnguarded: a section that names the key has no revision, or one
	// that cannot be rendered from the key, and AllowUnguarded was not
	// given.
	ErrUnguarded = errors.New("the key's section has no revision that guards it")
	// ErrAmbiguous: the key reads in too many ways against a key template
	// (values holding the template's separators) to guard it.
	ErrAmbiguous = errors.New("the key matches a key template in too many ways")
)
