package lineage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/internal/buildinfo"
	"github.com/ofitec/pgproxy/internal/sqlscan"
)

// TransportConfig says where events go.
type TransportConfig struct {
	Type    string        // "http" | "file" | "console"
	URL     string        // http: POST {URL}/api/v1/lineage
	APIKey  string        // http: optional bearer token (never logged)
	Path    string        // file: JSON lines appended
	Queue   int           // events buffered between the relay and the sender; default 10000
	Timeout time.Duration // http: per attempt; default 5s
}

// Config configures an Emitter. It mirrors configs.Lineage (the configs
// package owns defaults there; NormalizeSQL defaults to true in it).
type Config struct {
	Enabled          bool
	JobNamespace     string // default job namespace (tag job_namespace overrides); default "pgproxy"
	DatasetNamespace string // e.g. postgres://db-primary:5432; required when Enabled
	CatalogPath      string // catalog YAML; "" = none
	NormalizeSQL     bool   // sql facet carries the query with literals replaced
	Transport        TransportConfig
}

// SessionInfo is what the proxy knows about the session that ran a tagged
// statement.
type SessionInfo struct {
	Database        string // dataset names are {Database}.{schema}.{table}; "" → User (PostgreSQL's default)
	User            string
	ApplicationName string
	ServerVersion   string // server_version ParameterStatus → processing_engine facet
	SessionJob      string // startup options=-c pgproxy.job=NAME: the job of untagged statements
}

// Result label values of pgproxy_lineage_events_total.
const (
	ResultSent    = "sent"
	ResultDropped = "dropped"
	ResultFailed  = "failed"
)

const (
	defaultQueue        = 10000
	defaultTimeout      = 5 * time.Second
	defaultJobNamespace = "pgproxy"
	// flushTimeout bounds the flush when Run's ctx ends without Close.
	flushTimeout = 5 * time.Second
)

// maxPendingSQL bounds the bytes of SQL text held by runs whose START the
// worker has not handled yet: the queue bounds the number of events, this
// bounds their size (a 10 MB INSERT ... VALUES times the queue length would
// not be bounded memory). A START over the budget is dropped like one that
// finds the queue full. A variable for tests.
var maxPendingSQL int64 = 64 << 20

// Emitter turns run transitions into OpenLineage events and delivers them on
// its own worker (Run). Start, Complete and Fail are safe for concurrent use
// and never block: they take a timestamp and try a non-blocking send on a
// bounded queue; when it is full (or the Emitter is closed) the event is
// dropped and counted. A nil *Emitter is valid and does nothing.
type Emitter struct {
	cfg      Config
	log      *zap.Logger
	catalog  *Catalog
	producer string
	queue    chan item
	sender   sender

	events                *prometheus.CounterVec
	sent, dropped, failed prometheus.Counter
	pendingSQL            atomic.Int64 // bytes of SQL not yet parsed by the worker

	mu       sync.RWMutex // guards closed against enqueue (RLock) and Close (Lock)
	closed   bool
	closeCtx context.Context // set by Close before stopping is closed
	// cancelSend cancels the worker's in-flight delivery once Close's ctx
	// ends (set by Run).
	cancelSend context.CancelFunc
	stopping   chan struct{} // closed by Close
	stopOnce   sync.Once

	running atomic.Bool   // Run has started
	runDone chan struct{} // closed when Run returns
	sendMu  sync.Mutex    // serializes draining: Run, or Close when Run never ran
}

type itemKind uint8

const (
	kindStart itemKind = iota
	kindComplete
	kindFail
)

type item struct {
	kind     itemKind
	run      *Run
	at       time.Time
	sqlstate string
	message  string
}

// Run is one execution of a tagged statement: Start, then Complete or Fail
// exactly once (later calls are no-ops). A nil *Run is valid and does
// nothing. Its methods are safe for concurrent use.
type Run struct {
	e    *Emitter
	id   uuid.UUID
	info SessionInfo
	sql  string
	tags Tags
	// fromSession: the job came from the session (pgproxy.job), not a tag;
	// such runs publish nothing for statements without datasets (BEGIN,
	// SET, SELECT 1, ...), which would otherwise flood the catalog.
	fromSession bool
	ended       atomic.Bool
	// startDropped: the START event was dropped, so the terminal event is
	// dropped (and counted) too: runs are published whole or not at all
	// (short of a terminal event dropped after its START went out).
	startDropped atomic.Bool

	// Set by the worker goroutine only.
	parsed  bool
	query   string
	inputs  []dataset
	outputs []dataset
}

// ID returns the run's OpenLineage runId.
func (r *Run) ID() uuid.UUID {
	if r == nil {
		return uuid.Nil
	}
	return r.id
}

// NewEmitter validates cfg, loads the catalog, opens the transport and
// registers the metrics on reg (nil: not registered). A disabled Config gives
// an Emitter whose Start returns nil; its metrics are registered all the same.
func NewEmitter(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Emitter, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.JobNamespace == "" {
		cfg.JobNamespace = defaultJobNamespace
	}
	if cfg.Transport.Queue <= 0 {
		cfg.Transport.Queue = defaultQueue
	}
	if cfg.Transport.Timeout <= 0 {
		cfg.Transport.Timeout = defaultTimeout
	}
	e := &Emitter{
		cfg:      cfg,
		log:      log, // the caller names it (app: "lineage")
		producer: "https://github.com/ofitec/pgproxy/tree/" + buildinfo.Version,
		stopping: make(chan struct{}),
		runDone:  make(chan struct{}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgproxy_lineage_events_total",
			Help: "OpenLineage events by outcome: sent (2xx or written), dropped (queue full, closed, or flush deadline), failed (4xx, retries exhausted).",
		}, []string{"result"}),
	}
	e.sent = e.events.WithLabelValues(ResultSent)
	e.dropped = e.events.WithLabelValues(ResultDropped)
	e.failed = e.events.WithLabelValues(ResultFailed)
	if !cfg.Enabled {
		e.closed = true
		if err := e.register(reg); err != nil {
			return nil, err
		}
		return e, nil
	}
	if err := validJobNamespace(cfg.JobNamespace); err != nil {
		return nil, fmt.Errorf("lineage: job namespace: %w", err)
	}
	if cfg.DatasetNamespace == "" {
		return nil, errors.New("lineage: dataset namespace is required")
	}
	cat, err := LoadCatalog(cfg.CatalogPath)
	if err != nil {
		return nil, err
	}
	e.catalog = cat
	e.queue = make(chan item, cfg.Transport.Queue)
	switch cfg.Transport.Type {
	case "http":
		if cfg.Transport.URL == "" {
			return nil, errors.New("lineage: http transport needs a url")
		}
		e.sender = newHTTPSender(cfg.Transport.URL, cfg.Transport.APIKey, cfg.Transport.Timeout)
	case "file":
		if cfg.Transport.Path == "" {
			return nil, errors.New("lineage: file transport needs a path")
		}
		if e.sender, err = newFileSender(cfg.Transport.Path); err != nil {
			return nil, err
		}
	case "console":
		e.sender = &writerSender{w: os.Stdout}
	default:
		return nil, fmt.Errorf("lineage: unknown transport type %q (http, file, console)", cfg.Transport.Type)
	}
	if err := e.register(reg); err != nil {
		_ = e.sender.Close()
		return nil, err
	}
	e.log.Info("lineage enabled",
		zap.String("transport", cfg.Transport.Type),
		zap.String("job_namespace", cfg.JobNamespace),
		zap.String("dataset_namespace", cfg.DatasetNamespace),
		zap.Int("catalog_entries", cat.Len()),
		zap.Int("queue", cfg.Transport.Queue))
	return e, nil
}

func (e *Emitter) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pgproxy_lineage_queue_depth",
		Help: "OpenLineage events waiting for the sender.",
	}, func() float64 { return float64(len(e.queue)) })
	if err := reg.Register(e.events); err != nil {
		return fmt.Errorf("lineage: register metrics: %w", err)
	}
	if err := reg.Register(depth); err != nil {
		reg.Unregister(e.events)
		return fmt.Errorf("lineage: register metrics: %w", err)
	}
	return nil
}

// setWriter replaces the console transport's output (tests).
func (e *Emitter) setWriter(w io.Writer) { e.sender = &writerSender{w: w} }

// Enabled reports whether Start may return a run.
func (e *Emitter) Enabled() bool { return e != nil && e.cfg.Enabled }

// Start records that a tagged statement was sent to the server and enqueues
// its START event. The job is tags.Job, else info.SessionJob; with neither,
// Start returns nil. sql is the statement text as the client sent it; it is
// parsed later, on the worker. The returned Run must be ended with Complete
// or Fail. A run whose job comes from the session publishes nothing when its
// statement reads and writes no table (BEGIN, SET, ...).
func (e *Emitter) Start(info SessionInfo, sql string, tags Tags) *Run {
	if e == nil || !e.cfg.Enabled {
		return nil
	}
	fromSession := false
	if tags.Job == "" {
		tags.Job, fromSession = info.SessionJob, true
	}
	if tags.Job == "" {
		return nil
	}
	id, err := uuid.NewV7()
	if err != nil {
		id = uuid.New()
	}
	r := &Run{e: e, id: id, info: info, sql: sql, tags: tags, fromSession: fromSession}
	n := int64(len(sql))
	if e.pendingSQL.Add(n) > maxPendingSQL {
		e.pendingSQL.Add(-n)
		r.sql = ""
		r.startDropped.Store(true)
		e.dropped.Inc()
		return r
	}
	if !e.enqueue(item{kind: kindStart, run: r, at: time.Now()}) {
		e.pendingSQL.Add(-n)
		r.sql = ""
		r.startDropped.Store(true)
	}
	return r
}

// Complete enqueues the run's COMPLETE event (its CommandComplete arrived).
func (r *Run) Complete() {
	if r == nil || !r.ended.CompareAndSwap(false, true) {
		return
	}
	if r.startDropped.Load() {
		r.e.dropped.Inc()
		return
	}
	r.e.enqueue(item{kind: kindComplete, run: r, at: time.Now()})
}

// Fail enqueues the run's FAIL event with an errorMessage facet (the
// ErrorResponse's SQLSTATE and message).
func (r *Run) Fail(sqlstate, message string) {
	if r == nil || !r.ended.CompareAndSwap(false, true) {
		return
	}
	if r.startDropped.Load() {
		r.e.dropped.Inc()
		return
	}
	r.e.enqueue(item{kind: kindFail, run: r, at: time.Now(), sqlstate: sqlstate, message: message})
}

// enqueue tries a non-blocking send; a full queue or a closed Emitter drops
// (and counts) the event.
func (e *Emitter) enqueue(it item) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.closed {
		e.dropped.Inc()
		return false
	}
	select {
	case e.queue <- it:
		return true
	default:
		e.dropped.Inc()
		return false
	}
}

// Run is the worker: it builds and delivers queued events, in order, until
// ctx ends or Close is called, then flushes what is queued (bounded by
// Close's ctx, or by a few seconds when ctx ended first) and closes the
// transport. Call it once; it returns nil.
func (e *Emitter) Run(ctx context.Context) error {
	if e == nil {
		<-ctx.Done()
		return nil
	}
	if !e.running.CompareAndSwap(false, true) {
		e.mu.RLock()
		closed := e.closed
		e.mu.RUnlock()
		if closed {
			return nil // Close ran first and flushed
		}
		return errors.New("lineage: Run called twice")
	}
	defer close(e.runDone)
	if !e.cfg.Enabled {
		select {
		case <-ctx.Done():
		case <-e.stopping:
		}
		return nil
	}
	e.sendMu.Lock()
	defer e.sendMu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mu.Lock()
	e.cancelSend = cancel
	e.mu.Unlock()
	for {
		select { // Close wins over a busy queue
		case <-e.stopping:
			e.flush(e.closeCtx)
			return nil
		default:
		}
		select {
		case it := <-e.queue:
			e.handle(sctx, it)
		case <-e.stopping:
			e.flush(e.closeCtx)
			return nil
		case <-ctx.Done():
			e.stopAccepting(nil)
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			e.flush(fctx)
			cancel()
			return nil
		}
	}
}

// Close stops accepting events, lets the worker flush the queue until ctx's
// deadline (events left then are dropped and counted), and waits for Run to
// return. When Run never started, Close flushes on its own. It returns
// ctx.Err() if ctx ended before the flush did.
func (e *Emitter) Close(ctx context.Context) error {
	if e == nil {
		return nil
	}
	e.stopAccepting(ctx)
	if !e.cfg.Enabled {
		if e.running.Load() {
			select {
			case <-e.runDone:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	if e.running.CompareAndSwap(false, true) {
		// No worker: drain here.
		close(e.runDone)
		e.sendMu.Lock()
		defer e.sendMu.Unlock()
		e.flush(ctx)
		return ctx.Err()
	}
	e.mu.RLock()
	cancelSend := e.cancelSend
	e.mu.RUnlock()
	if cancelSend != nil {
		// A delivery in flight (a hung Marquez) must not outlive the deadline.
		stop := context.AfterFunc(ctx, cancelSend)
		defer stop()
	}
	select {
	case <-e.runDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopAccepting marks the Emitter closed (no more enqueues) and, from Close,
// hands the flush deadline to the worker.
func (e *Emitter) stopAccepting(closeCtx context.Context) {
	e.mu.Lock()
	e.closed = true
	if closeCtx != nil && e.closeCtx == nil {
		e.closeCtx = closeCtx
	}
	e.mu.Unlock()
	if closeCtx != nil {
		e.stopOnce.Do(func() { close(e.stopping) })
	}
}

// flush delivers what is queued until ctx ends, drops (and counts) the rest,
// and closes the transport. Enqueues are already refused.
func (e *Emitter) flush(ctx context.Context) {
	if ctx == nil {
		ctx = context.Background()
	}
	for {
		select {
		case it := <-e.queue:
			if ctx.Err() != nil {
				if !it.run.parsed {
					e.pendingSQL.Add(-int64(len(it.run.sql)))
					it.run.parsed, it.run.sql = true, ""
				}
				e.dropped.Inc()
				continue
			}
			e.handle(ctx, it)
			continue
		default:
		}
		break
	}
	if err := e.sender.Close(); err != nil {
		e.log.Warn("lineage transport close", zap.Error(err))
	}
}

// handle builds one event and delivers it.
func (e *Emitter) handle(ctx context.Context, it item) {
	if !it.run.parsed {
		e.parse(it.run)
	}
	if it.run.fromSession && len(it.run.inputs)+len(it.run.outputs) == 0 {
		return // a session-tagged statement that touches no dataset
	}
	body, err := json.Marshal(e.build(it))
	if err != nil { // cannot happen with these types
		e.failed.Inc()
		e.log.Error("lineage event encoding", zap.Error(err))
		return
	}
	if err := e.sender.Send(ctx, body); err != nil {
		e.failed.Inc()
		fields := []zap.Field{
			zap.String("job", it.run.tags.Job),
			zap.String("run_id", it.run.id.String()),
			zap.String("event_type", eventType(it.kind)),
			zap.Error(err),
		}
		var se *StatusError
		if errors.As(err, &se) {
			fields = append(fields, zap.Int("status", se.Status))
		}
		e.log.Warn("lineage event not delivered", fields...)
		return
	}
	e.sent.Inc()
}

func eventType(k itemKind) string {
	switch k {
	case kindComplete:
		return EventComplete
	case kindFail:
		return EventFail
	}
	return EventStart
}

// build makes the RunEvent of it (worker goroutine only).
func (e *Emitter) build(it item) *runEvent {
	r := it.run
	if !r.parsed {
		e.parse(r)
	}
	if r.inputs == nil { // the schema wants arrays, never null
		r.inputs = []dataset{}
	}
	if r.outputs == nil {
		r.outputs = []dataset{}
	}
	base := func(schemaURL string) facetBase { return facetBase{Producer: e.producer, SchemaURL: schemaURL} }
	ns := e.cfg.JobNamespace
	if r.tags.JobNamespace != "" && validJobNamespace(r.tags.JobNamespace) == nil {
		ns = r.tags.JobNamespace
	}
	ev := &runEvent{
		EventType: eventType(it.kind),
		EventTime: it.at.UTC().Format(time.RFC3339Nano),
		Run:       olRun{RunID: r.id.String()},
		Job:       olJob{Namespace: ns, Name: r.tags.Job},
		Inputs:    r.inputs,
		Outputs:   r.outputs,
		Producer:  e.producer,
		SchemaURL: runEventSchemaURL,
	}
	version := r.info.ServerVersion
	if version == "" {
		version = "unknown"
	}
	ev.Run.Facets.ProcessingEngine = &processingEngineFacet{
		facetBase: base(schemaEngine), Version: version, Name: "postgresql",
		OpenlineageAdapterVersion: buildinfo.Version,
	}
	if r.tags.ParentJob != "" && r.tags.ParentRunID != "" {
		if pid, err := uuid.Parse(r.tags.ParentRunID); err == nil {
			p := &parentFacet{facetBase: base(schemaParent)}
			p.Run.RunID = pid.String()
			p.Job.Namespace = ns
			p.Job.Name = r.tags.ParentJob
			ev.Run.Facets.Parent = p
		}
	}
	if it.kind == kindFail {
		msg := it.message
		if it.sqlstate != "" {
			msg = "SQLSTATE " + it.sqlstate + ": " + msg
		}
		ev.Run.Facets.ErrorMessage = &errorMessageFacet{
			facetBase: base(schemaErrorMessage), Message: msg, ProgrammingLanguage: "SQL",
		}
	}
	ev.Job.Facets.SQL = &sqlFacet{facetBase: base(schemaSQL), Query: r.query, Dialect: "postgres"}
	ev.Job.Facets.JobType = &jobTypeFacet{
		facetBase: base(schemaJobType), ProcessingType: "BATCH", Integration: "PGPROXY", JobType: "QUERY",
	}
	return ev
}

// withheldQuery stands in for a query that could not be normalized: its
// literals cannot be told apart, so its text is not published.
const withheldQuery = "-- pgproxy: the statement could not be parsed; its text is withheld"

// parse fills the run's query text and datasets (worker goroutine only).
func (e *Emitter) parse(r *Run) {
	sql := r.sql
	r.parsed = true
	r.sql = "" // parsed: the text is no longer held
	e.pendingSQL.Add(-int64(len(sql)))
	r.query = sql
	if e.cfg.NormalizeSQL {
		q, err := sqlscan.Normalize(sql)
		if err != nil {
			q = withheldQuery
		}
		r.query = q
	}
	reads, writes, err := sqlscan.Tables(sql)
	if err != nil {
		e.log.Debug("lineage: statement not parsed", zap.String("job", r.tags.Job), zap.Error(err))
		return
	}
	db := r.info.Database
	if db == "" {
		db = r.info.User
	}
	r.inputs = e.datasets(db, reads)
	r.outputs = e.datasets(db, writes)
}

func (e *Emitter) datasets(db string, refs []sqlscan.TableRef) []dataset {
	out := make([]dataset, 0, len(refs))
	for _, t := range refs {
		schema := t.Schema
		if schema == "" {
			schema = "public"
		}
		d := dataset{Namespace: e.cfg.DatasetNamespace, Name: db + "." + schema + "." + t.Name}
		f := &datasetFacets{DataSource: &dataSourceFacet{
			facetBase: facetBase{Producer: e.producer, SchemaURL: schemaDataSource},
			Name:      e.cfg.DatasetNamespace,
		}}
		if strings.Contains(e.cfg.DatasetNamespace, "://") && db != "" {
			f.DataSource.URI = strings.TrimRight(e.cfg.DatasetNamespace, "/") + "/" + db
		}
		if c, ok := e.catalog.Lookup(db, schema, t.Name); ok {
			e.catalogFacets(f, c)
		}
		d.Facets = f
		out = append(out, d)
	}
	return out
}

func (e *Emitter) catalogFacets(f *datasetFacets, c *CatalogEntry) {
	base := func(s string) facetBase { return facetBase{Producer: e.producer, SchemaURL: s} }
	if c.Description != "" {
		f.Documentation = &documentationFacet{facetBase: base(schemaDocumentation), Description: c.Description}
	}
	if o := ownerURN(c.Owner); o != "" {
		f.Ownership = &ownershipFacet{facetBase: base(schemaOwnership), Owners: []owner{{Name: o}}}
	}
	if len(c.Columns) > 0 {
		s := &schemaFacet{facetBase: base(schemaSchema)}
		for i, col := range c.Columns {
			s.Fields = append(s.Fields, schemaField{Name: col.Name, Type: col.Type, Description: col.Description, OrdinalPosition: i + 1})
		}
		f.Schema = s
	}
}

// validJobNamespace rejects what Marquez cannot store or look up: empty,
// whitespace, and "scheme://" URIs.
func validJobNamespace(ns string) error {
	switch {
	case ns == "":
		return errors.New("empty")
	case strings.ContainsAny(ns, " \t\r\n"):
		return fmt.Errorf("%q contains whitespace", ns)
	case strings.Contains(ns, "://"):
		return fmt.Errorf("%q looks like a URI (no scheme:// in job namespaces)", ns)
	}
	return nil
}
