// Package lineagetest validates OpenLineage events against the official JSON
// schemas (the OpenLineage specification, Apache-2.0; see
// lineage/testdata/openlineage/SOURCE.txt), for tests of the lineage package
// and of the proxy end to end.
//
// Validation follows OPENLINEAGE.md: every schema file registered under its
// $id, format assertion on (uuid, date-time, uri are checked), the event
// validated against RunEvent, then each facet, in a one-key container such as
// {"sql": {...}}, against its own facet file (the core schema only checks
// facets against the generic base facet).
package lineagetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// RunEventSchema is the schema every event must satisfy.
const RunEventSchema = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"

// facetFiles maps (container kind, facet key) to the schema file (by base
// name) that defines the facet. A facet key not listed here is an error: the
// proxy emits only facets whose schema it knows.
var facetFiles = map[string]map[string]string{
	"run": {
		"processing_engine": "ProcessingEngineRunFacet",
		"parent":            "ParentRunFacet",
		"errorMessage":      "ErrorMessageRunFacet",
		"nominalTime":       "NominalTimeRunFacet",
		"externalQuery":     "ExternalQueryRunFacet",
		"tags":              "TagsRunFacet",
	},
	"job": {
		"sql":                "SQLJobFacet",
		"jobType":            "JobTypeJobFacet",
		"documentation":      "DocumentationJobFacet",
		"ownership":          "OwnershipJobFacet",
		"sourceCodeLocation": "SourceCodeLocationJobFacet",
		"tags":               "TagsJobFacet",
	},
	"dataset": {
		"documentation": "DocumentationDatasetFacet",
		"ownership":     "OwnershipDatasetFacet",
		"schema":        "SchemaDatasetFacet",
		"dataSource":    "DatasourceDatasetFacet",
		"columnLineage": "ColumnLineageDatasetFacet",
	},
}

// Validator validates events; it is safe for concurrent use.
type Validator struct {
	event  *jsonschema.Schema
	facets map[string]map[string]*jsonschema.Schema // kind → key → schema
}

// NewValidator compiles the schemas found in dir, a copy of
// shared/contracts/openlineage (its top-level *.json files).
func NewValidator(dir string) (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("lineagetest: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("lineagetest: no schema files in %s", dir)
	}
	ids := map[string]string{} // base name → $id
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("lineagetest: %w", err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("lineagetest: %s: %w", f, err)
		}
		m, _ := doc.(map[string]any)
		id, _ := m["$id"].(string)
		if id == "" {
			return nil, fmt.Errorf("lineagetest: %s has no $id", f)
		}
		if err := c.AddResource(id, doc); err != nil {
			return nil, fmt.Errorf("lineagetest: add %s: %w", id, err)
		}
		ids[strings.TrimSuffix(filepath.Base(f), ".json")] = id
	}
	v := &Validator{facets: map[string]map[string]*jsonschema.Schema{}}
	if v.event, err = c.Compile(RunEventSchema); err != nil {
		return nil, fmt.Errorf("lineagetest: compile RunEvent: %w", err)
	}
	for kind, keys := range facetFiles {
		v.facets[kind] = map[string]*jsonschema.Schema{}
		for key, file := range keys {
			id, ok := ids[file]
			if !ok {
				return nil, fmt.Errorf("lineagetest: schema file %s.json missing in %s", file, dir)
			}
			s, err := c.Compile(id)
			if err != nil {
				return nil, fmt.Errorf("lineagetest: compile %s: %w", id, err)
			}
			v.facets[kind][key] = s
		}
	}
	return v, nil
}

// Validate checks one event (JSON) against RunEvent and every facet against
// its own schema. The error lists the first failure with its location.
func (v *Validator) Validate(event []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(event))
	if err != nil {
		return fmt.Errorf("lineagetest: not JSON: %w", err)
	}
	if err := v.event.Validate(inst); err != nil {
		return fmt.Errorf("lineagetest: RunEvent: %w", err)
	}
	var ev struct {
		Run     struct{ Facets map[string]json.RawMessage }   `json:"run"`
		Job     struct{ Facets map[string]json.RawMessage }   `json:"job"`
		Inputs  []struct{ Facets map[string]json.RawMessage } `json:"inputs"`
		Outputs []struct{ Facets map[string]json.RawMessage } `json:"outputs"`
	}
	if err := json.Unmarshal(event, &ev); err != nil {
		return fmt.Errorf("lineagetest: %w", err)
	}
	if err := v.validateFacets("run", ev.Run.Facets); err != nil {
		return err
	}
	if err := v.validateFacets("job", ev.Job.Facets); err != nil {
		return err
	}
	for _, d := range append(ev.Inputs, ev.Outputs...) {
		if err := v.validateFacets("dataset", d.Facets); err != nil {
			return err
		}
	}
	return nil
}

func (v *Validator) validateFacets(kind string, facets map[string]json.RawMessage) error {
	for key, raw := range facets {
		s, ok := v.facets[kind][key]
		if !ok {
			return fmt.Errorf("lineagetest: %s facet %q has no known schema", kind, key)
		}
		container, err := json.Marshal(map[string]json.RawMessage{key: raw})
		if err != nil {
			return fmt.Errorf("lineagetest: %w", err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(container))
		if err != nil {
			return fmt.Errorf("lineagetest: %w", err)
		}
		if err := s.Validate(inst); err != nil {
			return fmt.Errorf("lineagetest: %s facet %q: %w", kind, key, err)
		}
	}
	return nil
}

// SchemaDir finds the schemas from the current directory (a package directory
// under go test): <module root>/lineage/testdata/openlineage, else
// <module root>/../shared/contracts/openlineage.
func SchemaDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("lineagetest: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("lineagetest: go.mod not found above the working directory")
		}
		dir = parent
	}
	for _, cand := range []string{
		filepath.Join(dir, "lineage", "testdata", "openlineage"),
		filepath.Join(dir, "..", "shared", "contracts", "openlineage"),
	} {
		if _, err := os.Stat(filepath.Join(cand, "OpenLineage.json")); err == nil {
			return cand, nil
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("lineagetest: %w", err)
		}
	}
	return "", fmt.Errorf("lineagetest: no OpenLineage schemas under %s", dir)
}

var (
	defaultOnce sync.Once
	defaultV    *Validator
	defaultErr  error
)

// Default returns a Validator over SchemaDir's schemas, built once.
func Default() (*Validator, error) {
	defaultOnce.Do(func() {
		dir, err := SchemaDir()
		if err != nil {
			defaultErr = err
			return
		}
		defaultV, defaultErr = NewValidator(dir)
	})
	return defaultV, defaultErr
}

// ValidateEvent validates one event with the Default validator.
func ValidateEvent(event []byte) error {
	v, err := Default()
	if err != nil {
		return err
	}
	return v.Validate(event)
}

// TB is the part of testing.TB that Check needs.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// Check fails the test when event does not validate.
func Check(t TB, event []byte) {
	t.Helper()
	if err := ValidateEvent(event); err != nil {
		t.Fatalf("invalid OpenLineage event: %v\n%s", err, event)
	}
}
