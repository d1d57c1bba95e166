// Package fakemarquez is an in-memory Marquez (OpenLineage HTTP endpoint) for
// tests. Marquez cannot run on the test machines; the fake keeps to the
// shapes and status codes of shared/contracts/OPENLINEAGE.md:
//
//   - POST /api/v1/lineage: 201 for an accepted event; 422 with
//     {"errors":[...]} when a required field is missing or eventType is not
//     in the spec's enum; 400 for a job namespace with whitespace; 500 for a
//     body that is not JSON or an eventTime that is not RFC 3339;
//     401 when an API key is set and the request does not carry it.
//   - GET /api/v1/events/lineage?limit=N: {"events":[...],"totalCount":N},
//     newest first.
//   - GET /api/v1/lineage?nodeId=dataset:{ns}:{name} (or job:{ns}:{name}):
//     {"graph":[nodes]}, the nodes connected to nodeId through the recorded
//     events' inputs → job → outputs; 404 for an unknown node.
//
// Failure modes for resilience tests (SetMode): ModeDown answers 503,
// ModeHang accepts the request and never answers until the mode changes or
// the server closes, ModeRefuse closes the listener (connections refused)
// until another mode reopens it on the same address.
//
// A Server is safe for concurrent use; Close stops every goroutine it owns.
package fakemarquez

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Mode is how the fake answers.
type Mode int

// Modes.
const (
	ModeOK     Mode = iota // validate, record, 201
	ModeDown               // 503, nothing recorded
	ModeHang               // never answer (until SetMode or Close)
	ModeRefuse             // listener closed: connection refused
)

func (m Mode) String() string {
	switch m {
	case ModeOK:
		return "ok"
	case ModeDown:
		return "down"
	case ModeHang:
		return "hang"
	case ModeRefuse:
		return "refuse"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

var validEventTypes = map[string]bool{
	"START": true, "RUNNING": true, "COMPLETE": true, "ABORT": true, "FAIL": true, "OTHER": true,
}

// Server is the fake. URL is fixed for its life, across ModeRefuse.
type Server struct {
	URL  string
	addr string

	mu       sync.Mutex
	mode     Mode
	apiKey   string
	check    func([]byte) error // extra check of each POSTed body (schemas)
	checkErr []error
	events   []json.RawMessage // accepted, in arrival order
	statuses map[int]int       // answers by status code
	hang     chan struct{}     // closed when leaving ModeHang
	changed  chan struct{}     // closed (and replaced) whenever events grow
	srv      *http.Server
	serving  sync.WaitGroup
	closed   bool
}

// New starts a fake on a free loopback port. Call Close.
func New() *Server {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("fakemarquez: listen: %v", err))
	}
	s := &Server{
		addr:     ln.Addr().String(),
		statuses: map[int]int{},
		hang:     make(chan struct{}),
		changed:  make(chan struct{}),
	}
	s.URL = "http://" + s.addr
	s.mu.Lock()
	s.serveLocked(ln)
	s.mu.Unlock()
	return s
}

func (s *Server) serveLocked(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/lineage", s.postLineage)
	mux.HandleFunc("GET /api/v1/events/lineage", s.getEvents)
	mux.HandleFunc("GET /api/v1/lineage", s.getGraph)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.srv = srv
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		_ = srv.Serve(ln)
	}()
}

// SetMode switches how the fake answers. Leaving ModeHang releases hung
// requests (they get 503); leaving ModeRefuse listens again on the same
// address.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || m == s.mode {
		return
	}
	old := s.mode
	s.mode = m
	if old == ModeHang {
		close(s.hang)
		s.hang = make(chan struct{})
	}
	if m == ModeRefuse {
		srv := s.srv
		s.srv = nil
		s.mu.Unlock()
		_ = srv.Close() // listener and every connection
		s.mu.Lock()
		return
	}
	if old == ModeRefuse {
		// The freed port can be taken for a moment by an outgoing
		// connection's ephemeral port on a busy machine: retry.
		var ln net.Listener
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if ln, err = net.Listen("tcp", s.addr); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			panic(fmt.Sprintf("fakemarquez: listen again on %s: %v", s.addr, err))
		}
		s.serveLocked(ln)
	}
}

// SetAPIKey makes POST require "Authorization: Bearer key" (401 otherwise);
// "" turns the check off.
func (s *Server) SetAPIKey(key string) {
	s.mu.Lock()
	s.apiKey = key
	s.mu.Unlock()
}

// SetCheck runs check on every POSTed body (e.g. lineagetest.ValidateEvent,
// the OpenLineage JSON schemas) and records its errors (CheckErrors). The
// answer still follows Marquez's rules: Marquez does not validate schemas.
func (s *Server) SetCheck(check func(event []byte) error) {
	s.mu.Lock()
	s.check = check
	s.mu.Unlock()
}

// CheckErrors returns the errors of SetCheck's check so far.
func (s *Server) CheckErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.checkErr...)
}

// Close stops the server, releases hung requests and waits for its
// goroutines.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	if s.mode == ModeHang {
		close(s.hang)
		s.hang = make(chan struct{})
	}
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
	s.serving.Wait()
}

// Events returns a copy of the accepted events, in arrival order.
func (s *Server) Events() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]json.RawMessage(nil), s.events...)
}

// Reset forgets the recorded events and answer counts.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = nil
	s.statuses = map[int]int{}
}

// Answers returns how many POSTs got status code.
func (s *Server) Answers(code int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statuses[code]
}

// WaitFor waits until at least n events were accepted and returns them.
func (s *Server) WaitFor(ctx context.Context, n int) ([]json.RawMessage, error) {
	for {
		s.mu.Lock()
		if len(s.events) >= n {
			ev := append([]json.RawMessage(nil), s.events...)
			s.mu.Unlock()
			return ev, nil
		}
		ch := s.changed
		got := len(s.events)
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("fakemarquez: %d of %d events: %w", got, n, ctx.Err())
		}
	}
}

func (s *Server) answer(w http.ResponseWriter, code int, body any) {
	s.mu.Lock()
	s.statuses[code]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if body != nil {
		_ = json.NewEncoder(w).Encode(body)
	}
}

func errorsBody(msgs ...string) map[string]any { return map[string]any{"errors": msgs} }

func (s *Server) postLineage(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	mode, hang, key := s.mode, s.hang, s.apiKey
	s.mu.Unlock()
	switch mode {
	case ModeDown:
		s.answer(w, http.StatusServiceUnavailable, errorsBody("fakemarquez: down"))
		return
	case ModeHang:
		select {
		case <-hang:
		case <-r.Context().Done():
			return
		}
		s.answer(w, http.StatusServiceUnavailable, errorsBody("fakemarquez: released from hang"))
		return
	}
	if key != "" && r.Header.Get("Authorization") != "Bearer "+key {
		s.answer(w, http.StatusUnauthorized, errorsBody("unauthorized"))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		s.answer(w, http.StatusBadRequest, errorsBody(err.Error()))
		return
	}
	s.mu.Lock()
	check := s.check
	s.mu.Unlock()
	if check != nil {
		if err := check(body); err != nil {
			s.mu.Lock()
			s.checkErr = append(s.checkErr, err)
			s.mu.Unlock()
		}
	}
	code, msgs := validate(body)
	if code != http.StatusCreated {
		s.answer(w, code, errorsBody(msgs...))
		return
	}
	s.mu.Lock()
	s.events = append(s.events, json.RawMessage(body))
	close(s.changed)
	s.changed = make(chan struct{})
	s.statuses[http.StatusCreated]++
	s.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

type wireEvent struct {
	EventType *string `json:"eventType"`
	EventTime *string `json:"eventTime"`
	Producer  *string `json:"producer"`
	SchemaURL *string `json:"schemaURL"`
	Run       *struct {
		RunID *string `json:"runId"`
	} `json:"run"`
	Job     *wireNode  `json:"job"`
	Inputs  []wireNode `json:"inputs"`
	Outputs []wireNode `json:"outputs"`
}

type wireNode struct {
	Namespace *string `json:"namespace"`
	Name      *string `json:"name"`
}

// validate checks what Marquez checks on POST /api/v1/lineage.
func validate(body []byte) (int, []string) {
	var ev wireEvent
	if err := json.Unmarshal(body, &ev); err != nil {
		return http.StatusInternalServerError, []string{"unparseable JSON: " + err.Error()}
	}
	var missing []string
	need := func(p *string, field string) {
		if p == nil || *p == "" {
			missing = append(missing, field+" must not be null")
		}
	}
	need(ev.EventTime, "eventTime")
	need(ev.Producer, "producer")
	need(ev.SchemaURL, "schemaURL")
	if ev.Run == nil {
		missing = append(missing, "run must not be null")
	} else {
		need(ev.Run.RunID, "run.runId")
		if ev.Run.RunID != nil && *ev.Run.RunID != "" && !isUUID(*ev.Run.RunID) {
			missing = append(missing, "run.runId must be a UUID")
		}
	}
	if ev.Job == nil {
		missing = append(missing, "job must not be null")
	} else {
		need(ev.Job.Namespace, "job.namespace")
		need(ev.Job.Name, "job.name")
	}
	if ev.EventType != nil && !validEventTypes[*ev.EventType] {
		missing = append(missing, "eventType must be one of START, RUNNING, COMPLETE, ABORT, FAIL, OTHER")
	}
	for i, d := range ev.Inputs {
		need(d.Namespace, fmt.Sprintf("inputs[%d].namespace", i))
		need(d.Name, fmt.Sprintf("inputs[%d].name", i))
	}
	for i, d := range ev.Outputs {
		need(d.Namespace, fmt.Sprintf("outputs[%d].namespace", i))
		need(d.Name, fmt.Sprintf("outputs[%d].name", i))
	}
	if len(missing) > 0 {
		return http.StatusUnprocessableEntity, missing
	}
	if _, err := time.Parse(time.RFC3339Nano, *ev.EventTime); err != nil {
		return http.StatusInternalServerError, []string{"eventTime: " + err.Error()}
	}
	if strings.ContainsAny(*ev.Job.Namespace, " \t\r\n") {
		return http.StatusBadRequest, []string{"job.namespace must not contain whitespace"}
	}
	return http.StatusCreated, nil
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			s.answer(w, http.StatusBadRequest, errorsBody("limit must be a non-negative integer"))
			return
		}
		limit = n
	}
	s.mu.Lock()
	all := append([]json.RawMessage(nil), s.events...)
	s.mu.Unlock()
	out := make([]json.RawMessage, 0, min(limit, len(all)))
	for i := len(all) - 1; i >= 0 && len(out) < limit; i-- {
		out = append(out, all[i])
	}
	s.answer(w, http.StatusOK, map[string]any{"events": out, "totalCount": len(all)})
}

// Node is one node of the lineage graph, in Marquez's shape.
type Node struct {
	ID       string `json:"id"`
	Type     string `json:"type"` // DATASET | JOB
	Data     any    `json:"data"`
	InEdges  []Edge `json:"inEdges"`
	OutEdges []Edge `json:"outEdges"`
}

// Edge links two node ids.
type Edge struct {
	Origin      string `json:"origin"`
	Destination string `json:"destination"`
}

func (s *Server) getGraph(w http.ResponseWriter, r *http.Request) {
	nodeID := r.URL.Query().Get("nodeId")
	if nodeID == "" {
		s.answer(w, http.StatusBadRequest, errorsBody("nodeId is required"))
		return
	}
	nodes := s.graph()
	if _, ok := nodes[nodeID]; !ok {
		s.answer(w, http.StatusNotFound, errorsBody("node not found: "+nodeID))
		return
	}
	// The connected component of nodeID.
	seen := map[string]bool{nodeID: true}
	queue := []string{nodeID}
	var out []*Node
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		n := nodes[id]
		out = append(out, n)
		for _, e := range append(append([]Edge(nil), n.InEdges...), n.OutEdges...) {
			for _, next := range []string{e.Origin, e.Destination} {
				if !seen[next] {
					seen[next] = true
					queue = append(queue, next)
				}
			}
		}
	}
	s.answer(w, http.StatusOK, map[string]any{"graph": out})
}

func (s *Server) graph() map[string]*Node {
	type ds struct{ Namespace, Name string }
	var events []struct {
		Job     ds   `json:"job"`
		Inputs  []ds `json:"inputs"`
		Outputs []ds `json:"outputs"`
	}
	for _, raw := range s.Events() {
		var e struct {
			Job     ds   `json:"job"`
			Inputs  []ds `json:"inputs"`
			Outputs []ds `json:"outputs"`
		}
		if json.Unmarshal(raw, &e) == nil {
			events = append(events, e)
		}
	}
	nodes := map[string]*Node{}
	node := func(kind string, d ds) *Node {
		id := strings.ToLower(kind) + ":" + d.Namespace + ":" + d.Name
		n, ok := nodes[id]
		if !ok {
			n = &Node{ID: id, Type: kind, Data: map[string]string{"namespace": d.Namespace, "name": d.Name},
				InEdges: []Edge{}, OutEdges: []Edge{}}
			nodes[id] = n
		}
		return n
	}
	link := func(from, to *Node) {
		e := Edge{Origin: from.ID, Destination: to.ID}
		for _, x := range from.OutEdges {
			if x == e {
				return
			}
		}
		from.OutEdges = append(from.OutEdges, e)
		to.InEdges = append(to.InEdges, e)
	}
	for _, e := range events {
		j := node("JOB", e.Job)
		for _, in := range e.Inputs {
			link(node("DATASET", in), j)
		}
		for _, out := range e.Outputs {
			link(j, node("DATASET", out))
		}
	}
	return nodes
}
