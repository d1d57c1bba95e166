package lineagetest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExamples(t *testing.T) {
	dir, err := SchemaDir()
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(dir)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "examples", "*.json"))
	if len(files) < 5 {
		t.Fatalf("only %d examples", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		err = v.Validate(b)
		// bad_* and the seed's naive event must be rejected, the others accepted.
		wantBad := strings.HasPrefix(name, "bad_") || name == "naive_event.json"
		if wantBad && err == nil {
			t.Errorf("%s: accepted, want rejected", name)
		}
		if !wantBad && err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestUnknownFacetRejected(t *testing.T) {
	ev := []byte(`{"eventType":"START","eventTime":"2026-01-01T00:00:00Z","producer":"https://x/y","schemaURL":"https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
	"run":{"runId":"0194695c-6f38-7a5e-9d3b-3f1c2a9b8e01"},"job":{"namespace":"n","name":"j","facets":{"mystery":{"_producer":"https://x/y","_schemaURL":"https://x/y#z"}}}}`)
	if err := ValidateEvent(ev); err == nil || !strings.Contains(err.Error(), "mystery") {
		t.Fatalf("want unknown facet error, got %v", err)
	}
}

// The repo copy must stay byte-identical to the contract when shared/ is
// beside the repo.
func TestCopyMatchesContract(t *testing.T) {
	dir, err := SchemaDir()
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "..", "..", "..", "..", "shared", "contracts", "openlineage")
	if _, err := os.Stat(shared); err != nil {
		t.Skip("shared/contracts not beside the repo")
	}
	files, _ := filepath.Glob(filepath.Join(shared, "*.json"))
	for _, f := range files {
		a, _ := os.ReadFile(f)
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(f)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the contract copy (%v)", filepath.Base(f), err)
		}
	}
}
