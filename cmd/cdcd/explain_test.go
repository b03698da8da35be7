package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// Explain golden tests over the repository's rules.json.
func TestRulesExplainGolden(t *testing.T) {
	rulesFile := filepath.Join("..", "..", "rules.json")
	cases := []struct {
		name string
		args []string
	}{
		{"moved-row", []string{"--table", "climate_runs", "--op", "update",
			"--old", `{"id": 7, "run_id": 1, "scenario": "ssp245"}`, "--new", `{"id": 7, "run_id": 2, "scenario": "ssp245"}`}},
		{"moved-row-default-identity", []string{"--table", "climate_runs", "--op", "update",
			"--new", `{"id": 7, "run_id": 2, "scenario": "ssp245"}`}},
		{"column-filter-hit", []string{"--table", "tasks", "--op", "update",
			"--old", `{"id": 1, "title": "a", "status": "todo", "notes": "n"}`, "--new", `{"id": 1, "title": "b", "status": "todo", "notes": "n"}`}},
		{"column-filter-miss", []string{"--table", "tasks", "--op", "update",
			"--old", `{"id": 1, "title": "a", "status": "todo", "notes": "n"}`, "--new", `{"id": 1, "title": "a", "status": "todo", "notes": "m"}`}},
		{"invariant-broken", []string{"--table", "impact_functions", "--op", "update",
			"--old", `{"id": 3, "mdd_y": "{0,0.5}", "intensity_unit": "m", "version": 4}`,
			"--new", `{"id": 3, "mdd_y": "{0,0.6}", "intensity_unit": "cm", "version": 4}`}},
		{"invariant-kept", []string{"--table", "impact_functions", "--op", "update",
			"--old", `{"id": 3, "mdd_y": "{0,0.5}", "version": 4}`, "--new", `{"id": 3, "mdd_y": "{0,0.6}", "version": 5}`}},
		{"truncate", []string{"--table", "climate_runs", "--op", "truncate"}},
		{"delete-json", []string{"--table", "climate_runs", "--op", "delete", "--json",
			"--old", `{"id": 7, "run_id": 9, "scenario": null}`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{rulesFile}, c.args...)
			if code := rulesExplain(args, &out, &errOut); code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			checkGolden(t, filepath.Join("testdata", "explain", c.name+".golden"), out.Bytes())
		})
	}
}

func TestRulesExplainBadInput(t *testing.T) {
	rulesFile := filepath.Join("..", "..", "rules.json")
	for _, args := range [][]string{
		{"--op", "update"},
		{"--table", "t", "--op", "upsert"},
		{"--table", "t", "--op", "insert"},
		{"--table", "t", "--op", "delete", "--new", "{}"},
		{"--table", "t", "--op", "insert", "--new", "[1]"},
	} {
		var out, errOut bytes.Buffer
		if code := rulesExplain(append([]string{rulesFile}, args...), &out, &errOut); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
		if !strings.Contains(errOut.String(), "--") {
			t.Errorf("%v: message does not name the flag: %q", args, errOut.String())
		}
	}
}
