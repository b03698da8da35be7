package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rules check advises readers offline: a warning for keys no revision
// guards (failing only with --strict), a note for a revision wider than a
// row's keys.
func TestRulesCheckAdvisesReaders(t *testing.T) {
	t.Setenv("CDCD_DATABASE_URL", "")
	path := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(path, []byte(`{
  "sections": {
    "bare": { "keys": ["bare:{id}"] },
    "wide": { "keys": ["w:{id}:v{version}"], "revision": "w:{id}:rev" }
  },
  "rules": [{ "name": "r", "tables": ["t"], "invalidate": ["bare", "wide"] }]
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{path}, exitOK},
		{[]string{"--strict", path}, exitFailure},
	} {
		var out, errOut bytes.Buffer
		if code := rulesCheck(tc.args, &out, &errOut); code != tc.code {
			t.Errorf("rules check %v: exit %d, want %d\n%s%s", tc.args, code, tc.code, out.String(), errOut.String())
		}
		for _, want := range []string{
			path + `:3:5: warning: section "bare" has keys but no revision`,
			path + `:4:58: note: section "wide": revision "w:{id}:rev" does not name {version}`,
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("rules check %v: output lacks %q:\n%s", tc.args, want, out.String())
			}
		}
	}
}
