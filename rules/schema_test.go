package rules_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cdcd/cdcd/rules"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// semanticOnly matches problems a JSON Schema cannot express: references
// between parts of the file and uniqueness of names across objects.
var semanticOnly = regexp.MustCompile(`unknown section|is not invalidated by any rule|duplicate name|can never be broken|duplicate field`)

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	schema, err := c.Compile(filepath.Join("..", "rules.schema.json"))
	if err != nil {
		t.Fatalf("compile rules.schema.json: %v", err)
	}
	return schema
}

func schemaAccepts(t *testing.T, schema *jsonschema.Schema, data []byte) error {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return schema.Validate(doc)
}

// The schema shipped for editors and the parser agree on the corpus: every
// good file passes both; every bad file fails the parser, and the schema
// too unless all its problems are ones a schema cannot express.
func TestSchemaAgreesWithParser(t *testing.T) {
	schema := compileSchema(t)
	good, _ := filepath.Glob(filepath.Join("testdata", "good", "*.json"))
	good = append(good, filepath.Join("..", "rules.json"))
	for _, f := range good {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rules.Parse(f, data); err != nil {
			t.Errorf("%s: parser rejects a good file: %v", f, err)
		}
		if err := schemaAccepts(t, schema, data); err != nil {
			t.Errorf("%s: schema rejects a good file: %v", f, err)
		}
	}
	bad, _ := filepath.Glob(filepath.Join("testdata", "bad", "*.json"))
	if len(bad) == 0 {
		t.Fatal("no bad corpus")
	}
	for _, f := range bad {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		_, perr := rules.Parse(f, data)
		if perr == nil {
			t.Errorf("%s: parser accepts a bad file", f)
			continue
		}
		semantic := true
		for _, line := range strings.Split(perr.Error(), "\n") {
			if !semanticOnly.MatchString(line) {
				semantic = false
			}
		}
		if err := schemaAccepts(t, schema, data); err == nil && !semantic {
			t.Errorf("%s: schema accepts a file the parser rejects for:\n%v", f, perr)
		}
	}
}

func TestExampleRulesReferenceTheSchema(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "rules.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Schema string `json:"$schema"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Schema != "./rules.schema.json" {
		t.Errorf(`rules.json "$schema" = %q`, doc.Schema)
	}
}
