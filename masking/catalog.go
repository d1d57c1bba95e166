package masking

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Relation is what the masking needs of one pg_class entry.
type Relation struct {
	OID          uint32
	Schema, Name string
	Kind         byte     // relkind: 'r' table, 'p' partitioned, 'v' view, 'm' materialized view, 'f' foreign, ...
	Columns      []string // attribute names by attnum-1; "" for a dropped one
	// Ancestors are the tables it inherits from or is a partition of,
	// transitively, as {schema, name}.
	Ancestors [][2]string
	ViewDef   string // pg_get_viewdef of a view or materialized view
}

// Catalog answers the masking's catalog questions for one database of one
// backend. Implementations must be safe for concurrent use.
type Catalog interface {
	// RelationsNamed returns the relations called name in schema, or in
	// every schema when schema is "" (the proxy does not know the session's
	// search_path, so an unqualified name is each of them).
	RelationsNamed(ctx context.Context, schema, name string) ([]*Relation, error)
	// Relation returns the relation with this OID (nil if there is none).
	Relation(ctx context.Context, oid uint32) (*Relation, error)
	// FunctionSchemas returns the schemas that hold a function called name.
	FunctionSchemas(ctx context.Context, name string) ([]string, error)
}

// Login is how SideCatalog connects: the health monitor's role
// (health.user), which needs nothing but CONNECT on the database (every
// role may read pg_catalog).
type Login struct {
	User, Password string
	TLS            *tls.Config // nil: plaintext
	Timeout        time.Duration
}

const (
	relationSQL = `SELECT c.oid, n.nspname, c.relname, c.relkind::text,
 CASE WHEN c.relkind IN ('v','m') THEN pg_get_viewdef(c.oid) ELSE '' END,
 ARRAY(SELECT CASE WHEN a.attisdropped THEN '' ELSE a.attname::text END FROM pg_attribute a
       WHERE a.attrelid = c.oid AND a.attnum > 0 ORDER BY a.attnum),
 ARRAY(WITH RECURSIVE anc(p) AS (SELECT inhparent FROM pg_inherits WHERE inhrelid = c.oid
       UNION SELECT i.inhparent FROM pg_inherits i JOIN anc ON i.inhrelid = anc.p)
       SELECT pn.nspname::text FROM anc JOIN pg_class pc ON pc.oid = anc.p JOIN pg_namespace pn ON pn.oid = pc.relnamespace ORDER BY anc.p),
 ARRAY(WITH RECURSIVE anc(p) AS (SELECT inhparent FROM pg_inherits WHERE inhrelid = c.oid
       UNION SELECT i.inhparent FROM pg_inherits i JOIN anc ON i.inhrelid = anc.p)
       SELECT pc.relname::text FROM anc JOIN pg_class pc ON pc.oid = anc.p ORDER BY anc.p)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace`
	byNameSQL   = relationSQL + ` WHERE c.relname = $1 AND ($2 = '' OR n.nspname = $2) AND c.relkind IN ('r','p','v','m','f')`
	byOIDSQL    = relationSQL + ` WHERE c.oid = $1`
	functionSQL = `SELECT DISTINCT n.nspname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1`
	// maxCached bounds each cache of a SideCatalog: beyond, it starts over.
	maxCached = 10000
)

// SideCatalog is a Catalog over a connection of its own to one database of
// one backend. Answers are cached until Invalidate (RELOAD); what is not in
// the cache is looked up (a miss: a new table, a new view), so a relation
// created after the cache was filled is found. Lookups are serialized on the
// one connection, which reconnects after a failure. Safe for concurrent use.
type SideCatalog struct {
	addr, database string
	login          func() Login

	mu     sync.Mutex
	conn   *pgx.Conn
	byOID  map[uint32]*Relation
	byName map[[2]string][]*Relation
	funcs  map[string][]string
	closed bool
	gen    atomic.Uint64 // Generation: +1 whenever a cache is emptied
}

var (
	_ Catalog      = (*SideCatalog)(nil)
	_ Generational = (*SideCatalog)(nil)
)

// Generation implements Generational: it changes when the cached answers
// are forgotten (Invalidate, or a cache that filled up and started over).
// Relations found and FunctionSchemas answers are kept until then; a
// relation not found is asked again.
func (c *SideCatalog) Generation() uint64 { return c.gen.Load() }

// NewSideCatalog makes the catalog of database on the backend at addr.
// It connects at the first lookup.
func NewSideCatalog(addr, database string, login func() Login) *SideCatalog {
	return &SideCatalog{addr: addr, database: database, login: login}
}

// Invalidate forgets every cached answer.
func (c *SideCatalog) Invalidate() {
	c.mu.Lock()
	c.byOID, c.byName, c.funcs = nil, nil, nil
	c.gen.Add(1)
	c.mu.Unlock()
}

// Close closes the connection; later lookups fail.
func (c *SideCatalog) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.closeLocked()
}

func (c *SideCatalog) closeLocked() {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.conn.Close(ctx)
		cancel()
		c.conn = nil
	}
}

// RelationsNamed implements Catalog.
func (c *SideCatalog) RelationsNamed(ctx context.Context, schema, name string) ([]*Relation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	key := [2]string{schema, name}
	if rs, ok := c.byName[key]; ok {
		return rs, nil
	}
	rs, err := c.relationsLocked(ctx, byNameSQL, name, schema)
	if err != nil {
		return nil, err
	}
	if len(rs) > 0 { // a miss is asked again next time: the relation may be created meanwhile
		if c.byName == nil || len(c.byName) >= maxCached {
			if c.byName != nil {
				c.gen.Add(1) // forgotten: answers may change
			}
			c.byName = make(map[[2]string][]*Relation)
		}
		c.byName[key] = rs
	}
	return rs, nil
}

// Relation implements Catalog.
func (c *SideCatalog) Relation(ctx context.Context, oid uint32) (*Relation, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.byOID[oid]; ok {
		return r, nil
	}
	rs, err := c.relationsLocked(ctx, byOIDSQL, oid)
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	if c.byOID == nil || len(c.byOID) >= maxCached {
		if c.byOID != nil {
			c.gen.Add(1) // forgotten: answers may change
		}
		c.byOID = make(map[uint32]*Relation)
	}
	c.byOID[oid] = rs[0]
	return rs[0], nil
}

// FunctionSchemas implements Catalog.
func (c *SideCatalog) FunctionSchemas(ctx context.Context, name string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.funcs[name]; ok {
		return s, nil
	}
	conn, err := c.connLocked(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, functionSQL, name)
	if err != nil {
		c.closeLocked()
		return nil, fmt.Errorf("masking: catalog lookup on %s: %w", c.addr, err)
	}
	schemas, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		c.closeLocked()
		return nil, fmt.Errorf("masking: catalog lookup on %s: %w", c.addr, err)
	}
	if c.funcs == nil || len(c.funcs) >= maxCached {
		if c.funcs != nil {
			c.gen.Add(1) // forgotten: answers may change
		}
		c.funcs = make(map[string][]string)
	}
	c.funcs[name] = schemas
	return schemas, nil
}

func (c *SideCatalog) relationsLocked(ctx context.Context, sql string, args ...any) ([]*Relation, error) {
	conn, err := c.connLocked(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		c.closeLocked()
		return nil, fmt.Errorf("masking: catalog lookup on %s: %w", c.addr, err)
	}
	defer rows.Close()
	var out []*Relation
	for rows.Next() {
		var r Relation
		var kind string
		var ancS, ancN []string
		if err := rows.Scan(&r.OID, &r.Schema, &r.Name, &kind, &r.ViewDef, &r.Columns, &ancS, &ancN); err != nil {
			c.closeLocked()
			return nil, fmt.Errorf("masking: catalog lookup on %s: %w", c.addr, err)
		}
		if kind != "" {
			r.Kind = kind[0]
		}
		for i := range ancS {
			if i < len(ancN) {
				r.Ancestors = append(r.Ancestors, [2]string{ancS[i], ancN[i]})
			}
		}
		out = append(out, &r)
	}
	if err := rows.Err(); err != nil {
		c.closeLocked()
		return nil, fmt.Errorf("masking: catalog lookup on %s: %w", c.addr, err)
	}
	return out, nil
}

func (c *SideCatalog) connLocked(ctx context.Context) (*pgx.Conn, error) {
	if c.closed {
		return nil, errors.New("masking: catalog closed")
	}
	if c.conn != nil {
		return c.conn, nil
	}
	l := c.login()
	if l.User == "" {
		return nil, errors.New("masking: no role to read the catalog with (health.user)")
	}
	host, port, err := net.SplitHostPort(c.addr)
	if err != nil {
		return nil, fmt.Errorf("masking: backend %q: %w", c.addr, err)
	}
	cfg, err := pgx.ParseConfig("")
	if err != nil {
		return nil, err
	}
	cfg.Host = host
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("masking: backend %q: bad port", c.addr)
	}
	cfg.Port = uint16(p)
	cfg.User, cfg.Password, cfg.Database = l.User, l.Password, c.database
	cfg.TLSConfig = l.TLS
	cfg.Fallbacks = nil
	cfg.RuntimeParams = map[string]string{"application_name": "pgproxy masking catalog"}
	if l.Timeout > 0 {
		cfg.ConnectTimeout = l.Timeout
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("masking: catalog connection to %s/%s: %w", c.addr, c.database, err)
	}
	c.conn = conn
	return conn, nil
}

// Catalogs holds one SideCatalog per backend and database. Safe for
// concurrent use.
type Catalogs struct {
	login func() Login

	mu     sync.Mutex
	m      map[[2]string]*SideCatalog
	closed bool
}

// NewCatalogs makes an empty set of catalogs that log in with login().
func NewCatalogs(login func() Login) *Catalogs {
	return &Catalogs{login: login, m: make(map[[2]string]*SideCatalog)}
}

// Get returns the catalog of database on the backend at addr.
func (cs *Catalogs) Get(addr, database string) Catalog {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	k := [2]string{addr, database}
	c := cs.m[k]
	if c == nil {
		c = NewSideCatalog(addr, database, cs.login)
		if cs.closed {
			c.closed = true
		}
		cs.m[k] = c
	}
	return c
}

// Invalidate forgets every catalog's cached answers (RELOAD).
func (cs *Catalogs) Invalidate() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, c := range cs.m {
		c.Invalidate()
	}
}

// Close closes every catalog's connection.
func (cs *Catalogs) Close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.closed = true
	for _, c := range cs.m {
		c.Close()
	}
}
