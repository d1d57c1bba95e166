package fakemarquez

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const good = `{"eventType":"START","eventTime":"2026-01-02T03:04:05.678Z","producer":"https://github.com/ofitec/pgproxy/tree/dev",
"schemaURL":"https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
"run":{"runId":"0194695c-6f38-7a5e-9d3b-3f1c2a9b8e01"},"job":{"namespace":"ofitec","name":"raw_to_stage"},
"inputs":[{"namespace":"postgres://db:5432","name":"ofitec.public.raw_project"}],
"outputs":[{"namespace":"postgres://db:5432","name":"ofitec.public.stage_project"}]}`

func post(t *testing.T, c *http.Client, url, body string) (int, string) {
	t.Helper()
	resp, err := c.Post(url+"/api/v1/lineage", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func client() (*http.Client, func()) {
	tr := &http.Transport{}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}, tr.CloseIdleConnections
}

// mutate returns good with one change applied to its decoded form.
func mutate(t *testing.T, f func(m map[string]any)) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(good), &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, _ := json.Marshal(m)
	return string(b)
}

func TestPostStatusCodes(t *testing.T) {
	s := New()
	defer s.Close()
	c, done := client()
	defer done()
	tests := []struct {
		name string
		body string
		code int
		msg  string
	}{
		{"valid", good, 201, ""},
		{"no eventType is fine", mutate(t, func(m map[string]any) { delete(m, "eventType") }), 201, ""},
		{"missing eventTime", mutate(t, func(m map[string]any) { delete(m, "eventTime") }), 422, "eventTime"},
		{"missing producer", mutate(t, func(m map[string]any) { delete(m, "producer") }), 422, "producer"},
		{"missing schemaURL", mutate(t, func(m map[string]any) { delete(m, "schemaURL") }), 422, "schemaURL"},
		{"run.id instead of runId (the seed's bug)", mutate(t, func(m map[string]any) { m["run"] = map[string]any{"id": "x"} }), 422, "run.runId"},
		{"runId not a UUID", mutate(t, func(m map[string]any) { m["run"] = map[string]any{"runId": "1736935267"} }), 422, "UUID"},
		{"missing job.name", mutate(t, func(m map[string]any) { m["job"] = map[string]any{"namespace": "n"} }), 422, "job.name"},
		{"missing job", mutate(t, func(m map[string]any) { delete(m, "job") }), 422, "job"},
		{"bad eventType", mutate(t, func(m map[string]any) { m["eventType"] = "start" }), 422, "eventType"},
		{"dataset without name", mutate(t, func(m map[string]any) { m["inputs"] = []any{map[string]any{"namespace": "n"}} }), 422, "inputs[0].name"},
		{"namespace with space", mutate(t, func(m map[string]any) { m["job"] = map[string]any{"namespace": "a b", "name": "j"} }), 400, "whitespace"},
		{"eventTime unparseable", mutate(t, func(m map[string]any) { m["eventTime"] = "1736935267" }), 500, "eventTime"},
		{"not JSON", "{", 500, "JSON"},
	}
	for _, tt := range tests {
		code, body := post(t, c, s.URL, tt.body)
		if code != tt.code {
			t.Errorf("%s: status %d, want %d (%s)", tt.name, code, tt.code, body)
		}
		if tt.msg != "" && !strings.Contains(body, tt.msg) {
			t.Errorf("%s: body %q does not mention %q", tt.name, body, tt.msg)
		}
		if tt.code != 201 && !strings.Contains(body, `"errors"`) {
			t.Errorf("%s: body %q has no errors list", tt.name, body)
		}
	}
	if got := len(s.Events()); got != 2 {
		t.Errorf("recorded %d events, want 2", got)
	}
	if s.Answers(422) != 9 {
		t.Errorf("422 answers = %d, want 9", s.Answers(422))
	}
}

func TestCheck(t *testing.T) {
	s := New()
	defer s.Close()
	s.SetCheck(func(b []byte) error {
		if !bytes.Contains(b, []byte("_producer")) {
			return errors.New("no facet")
		}
		return nil
	})
	c, done := client()
	defer done()
	if code, _ := post(t, c, s.URL, good); code != 201 {
		t.Fatalf("status %d: the check must not change Marquez's answer", code)
	}
	if errs := s.CheckErrors(); len(errs) != 1 || errs[0].Error() != "no facet" {
		t.Fatalf("check errors %v", errs)
	}
}

func TestAPIKey(t *testing.T) {
	s := New()
	defer s.Close()
	s.SetAPIKey("k1")
	c, done := client()
	defer done()
	if code, _ := post(t, c, s.URL, good); code != 401 {
		t.Fatalf("without key: %d, want 401", code)
	}
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/lineage", strings.NewReader(good))
	req.Header.Set("Authorization", "Bearer k1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("with key: %d, want 201", resp.StatusCode)
	}
}

func TestModes(t *testing.T) {
	s := New()
	defer s.Close()
	c, done := client()
	defer done()

	s.SetMode(ModeDown)
	if code, _ := post(t, c, s.URL, good); code != 503 {
		t.Errorf("down: %d, want 503", code)
	}

	s.SetMode(ModeRefuse)
	if _, err := c.Post(s.URL+"/api/v1/lineage", "application/json", strings.NewReader(good)); err == nil {
		t.Error("refuse: request succeeded")
	}

	s.SetMode(ModeHang)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.URL+"/api/v1/lineage", strings.NewReader(good))
	_, err := c.Do(req)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hang: err %v, want deadline exceeded", err)
	}

	// A request hung when the mode changes is released.
	res := make(chan int, 1)
	go func() {
		resp, err := c.Post(s.URL+"/api/v1/lineage", "application/json", strings.NewReader(good))
		if err != nil {
			res <- -1
			return
		}
		resp.Body.Close()
		res <- resp.StatusCode
	}()
	time.Sleep(50 * time.Millisecond) // let it reach the handler; the result is checked either way
	s.SetMode(ModeOK)
	if code := <-res; code != 503 && code != 201 {
		t.Errorf("released request: %d", code)
	}

	if code, _ := post(t, c, s.URL, good); code != 201 {
		t.Errorf("ok again: %d, want 201", code)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.WaitFor(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestReadBack(t *testing.T) {
	s := New()
	defer s.Close()
	c, done := client()
	defer done()
	post(t, c, s.URL, good)
	second := strings.NewReplacer("raw_project", "stage_project", "stage_project", "vault_project", "raw_to_stage", "stage_to_vault", `"START"`, `"COMPLETE"`).Replace(good)
	post(t, c, s.URL, second)

	resp, err := c.Get(s.URL + "/api/v1/events/lineage?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Events     []map[string]any `json:"events"`
		TotalCount int              `json:"totalCount"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if list.TotalCount != 2 || len(list.Events) != 1 || list.Events[0]["eventType"] != "COMPLETE" {
		t.Errorf("events: %+v", list)
	}

	resp, err = c.Get(s.URL + "/api/v1/lineage?nodeId=dataset:postgres://db:5432:ofitec.public.raw_project")
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Graph []Node }
	_ = json.NewDecoder(resp.Body).Decode(&g)
	resp.Body.Close()
	ids := map[string]bool{}
	for _, n := range g.Graph {
		ids[n.ID] = true
	}
	for _, want := range []string{
		"dataset:postgres://db:5432:ofitec.public.raw_project",
		"job:ofitec:raw_to_stage",
		"dataset:postgres://db:5432:ofitec.public.stage_project",
		"job:ofitec:stage_to_vault",
		"dataset:postgres://db:5432:ofitec.public.vault_project",
	} {
		if !ids[want] {
			t.Errorf("graph lacks %s: %v", want, ids)
		}
	}

	resp, err = c.Get(s.URL + "/api/v1/lineage?nodeId=dataset:x:y")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("unknown node: %d, want 404", resp.StatusCode)
	}
}
