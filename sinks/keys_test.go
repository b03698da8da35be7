package sinks

import (
	"path"
	"testing"
)

// cdcd's own keys must stay under OwnKeyPattern, or an ACL user generated
// by cdcd rules acl could not record the slot's state.
func TestOwnKeysMatchOwnKeyPattern(t *testing.T) {
	for _, k := range []string{stateKey("cdcd"), markerKey("cdcd"), stateKey("s_it_1"), markerKey("s_it_1")} {
		// path.Match has Redis's glob syntax for '*' over names without '/'.
		if ok, err := path.Match(OwnKeyPattern, k); err != nil || !ok {
			t.Errorf("%q does not match %q (%v)", k, OwnKeyPattern, err)
		}
	}
}
