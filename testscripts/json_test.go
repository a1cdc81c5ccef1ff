package testscripts

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// schemaPath is the --json contract, cmd/schema.json.
var schemaPath, _ = filepath.Abs("../cmd/schema.json")

var (
	schemaOnce sync.Once
	schema     *jsonschema.Schema
	schemaErr  error
)

func loadSchema() (*jsonschema.Schema, error) {
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		schema, schemaErr = c.Compile(schemaPath)
	})
	return schema, schemaErr
}

// cmdJSONSchema: jsonschema FILE COMMAND ok|fail checks that FILE (stdout,
// stderr or a path) is one line holding one JSON object valid under
// cmd/schema.json, for COMMAND, with ok true or false (and then an error
// object). ! jsonschema FILE checks it is not valid (the control that the
// schema rejects things).
func cmdJSONSchema(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, (neg && len(args) == 1) || (!neg && len(args) == 3 && (args[2] == "ok" || args[2] == "fail")),
		"jsonschema stdout|stderr|FILE COMMAND ok|fail; ! jsonschema FILE")
	sch, err := loadSchema()
	if err != nil {
		ts.Fatalf("jsonschema: %v", err)
	}
	text := ts.ReadFile(args[0])
	err = validateJSONLine(sch, text)
	if neg {
		if err == nil {
			ts.Fatalf("jsonschema: %s is valid:\n%s", args[0], text)
		}
		ts.Logf("jsonschema: invalid as expected: %v", err)
		return
	}
	if err != nil {
		ts.Fatalf("jsonschema: %s: %v\n%s", args[0], err, text)
	}
	var head struct {
		Command string `json:"command"`
		OK      bool   `json:"ok"`
		Error   any    `json:"error"`
	}
	ts.Check(json.Unmarshal([]byte(text), &head))
	if head.Command != args[1] {
		ts.Fatalf("jsonschema: command %q, want %q", head.Command, args[1])
	}
	if head.OK != (args[2] == "ok") || (head.Error != nil) == (args[2] == "ok") {
		ts.Fatalf("jsonschema: ok=%v with error=%v, want %s", head.OK, head.Error != nil, args[2])
	}
}

func validateJSONLine(sch *jsonschema.Schema, text string) error {
	if strings.Count(text, "\n") != 1 || !strings.HasSuffix(text, "\n") {
		return fmt.Errorf("not exactly one line")
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(text)))
	if err != nil {
		return err
	}
	return sch.Validate(v)
}
