package masking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/maphash"
	"strings"
	"sync/atomic"

	"github.com/ofitec/pgproxy/internal/glob"
)

// Method is how a masked value is rewritten.
type Method uint8

// Methods. None is the zero value: not masked.
const (
	None    Method = iota
	Hash           // a keyed, stable hash of the value (equal values, equal hashes)
	Redact         // a fixed text ("***") for string types, NULL for the rest
	Partial        // the last 4 characters of a string kept after "***"; NULL for other types
	Null           // NULL
)

// String returns the method's configuration name.
func (m Method) String() string {
	switch m {
	case Hash:
		return "hash"
	case Redact:
		return "redact"
	case Partial:
		return "partial"
	case Null:
		return "null"
	}
	return "none"
}

// ParseMethod parses hash, redact, partial or null.
func ParseMethod(s string) (Method, error) {
	switch s {
	case "hash":
		return Hash, nil
	case "redact":
		return Redact, nil
	case "partial":
		return Partial, nil
	case "null":
		return Null, nil
	}
	return None, fmt.Errorf("unknown masking method %q (want hash, redact, partial or null)", s)
}

// Rule is one masking.rules entry. The match fields are globs, as in
// routing.rules ('*' any run of bytes, '?' one byte, '\' escapes the next
// byte); an empty field matches anything.
type Rule struct {
	User, Database, ApplicationName string
	// Columns maps "schema.table.column" to its method.
	Columns map[string]Method
	// PIIFromCatalog is the method of the columns Config.CatalogPII names
	// (None: they are not masked by this rule).
	PIIFromCatalog Method
}

// Config is what a Policy is built from.
type Config struct {
	Rules []Rule
	// CatalogPII are the columns lineage.catalog flags pii: true, as
	// "table.column", "schema.table.column" or "database.schema.table.column"
	// (a name without schema matches the table in every schema).
	CatalogPII []string
	// AllowFunctions are functions a masked session may call although they
	// are not PostgreSQL's own ("schema.name" or "name" globs).
	AllowFunctions []string
	// Key is the secret of the hash method (PGPROXY_MASKING_KEY). Required
	// when a rule uses hash.
	Key []byte
}

// Policy is a built masking configuration: immutable, safe for concurrent use.
type Policy struct {
	rules []builtRule
	allow []string
	key   []byte
	memo  *macMemo // MACs of values hashed before (nil without a key)
}

type builtRule struct {
	Rule
	index int
	cols  []colRule
}

// colRule is one masked column; empty Database or Schema match any.
type colRule struct {
	database, schema, table, column string
	method                          Method
	name                            string // as configured, for messages
}

// ErrNoKey is returned by New when a rule uses hash without a key.
var ErrNoKey = errors.New("masking: the hash method needs a key (PGPROXY_MASKING_KEY)")

// New validates cfg and builds its Policy.
func New(cfg Config) (*Policy, error) {
	p := &Policy{allow: append([]string(nil), cfg.AllowFunctions...), key: append([]byte(nil), cfg.Key...)}
	needKey := false
	for i, r := range cfg.Rules {
		br := builtRule{Rule: r, index: i}
		for name, m := range r.Columns {
			parts := strings.Split(name, ".")
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
				return nil, fmt.Errorf("masking.rules[%d].columns: %q: want schema.table.column", i, name)
			}
			if m == None {
				return nil, fmt.Errorf("masking.rules[%d].columns: %q: no method", i, name)
			}
			needKey = needKey || m == Hash
			br.cols = append(br.cols, colRule{schema: parts[0], table: parts[1], column: parts[2], method: m, name: name})
		}
		if r.PIIFromCatalog != None {
			needKey = needKey || r.PIIFromCatalog == Hash
			for _, name := range cfg.CatalogPII {
				c, err := catalogColumn(name)
				if err != nil {
					return nil, err
				}
				c.method = r.PIIFromCatalog
				br.cols = append(br.cols, c)
			}
		}
		p.rules = append(p.rules, br)
	}
	if needKey && len(p.key) == 0 {
		return nil, ErrNoKey
	}
	if len(p.key) > 0 {
		p.memo = newMacMemo()
	}
	return p, nil
}

func catalogColumn(name string) (colRule, error) {
	parts := strings.Split(name, ".")
	for _, s := range parts {
		if s == "" {
			return colRule{}, fmt.Errorf("masking: catalog column %q: empty name part", name)
		}
	}
	c := colRule{name: name}
	switch len(parts) {
	case 2:
		c.table, c.column = parts[0], parts[1]
	case 3:
		c.schema, c.table, c.column = parts[0], parts[1], parts[2]
	case 4:
		c.database, c.schema, c.table, c.column = parts[0], parts[1], parts[2], parts[3]
	default:
		return colRule{}, fmt.Errorf("masking: catalog column %q: want [[database.]schema.]table.column", name)
	}
	return c, nil
}

// Match returns the masking of a session: the first rule whose globs match,
// or nil when none does or the rule masks nothing.
func (p *Policy) Match(user, database, applicationName string) *Set {
	if p == nil {
		return nil
	}
	for i := range p.rules {
		r := &p.rules[i]
		if r.User == "" && r.Database == "" && r.ApplicationName == "" {
			continue // validated away by configs; never matches everything by accident
		}
		if !globOK(r.User, user) || !globOK(r.Database, database) || !globOK(r.ApplicationName, applicationName) {
			continue
		}
		s := &Set{Rule: r.index, User: user, allow: p.allow, key: p.key, memo: p.memo}
		for _, c := range r.cols {
			if c.database == "" || c.database == database {
				s.cols = append(s.cols, c)
			}
		}
		if len(s.cols) == 0 {
			return nil
		}
		return s
	}
	return nil
}

func globOK(pattern, s string) bool { return pattern == "" || glob.Match(pattern, s) }

// Set is the masking of one session: the columns its rule masks. Immutable.
type Set struct {
	Rule  int    // 0-based index in masking.rules
	User  string // the session's user, for messages
	cols  []colRule
	allow []string
	key   []byte
	memo  *macMemo
}

// Column is a masked column as the analysis and the resolver report it.
type Column struct {
	Name   string // schema.table.column
	Method Method
}

// Lookup returns how schema.table.column is masked (None: it is not).
func (s *Set) Lookup(schema, table, column string) Method {
	for _, c := range s.cols {
		if c.table == table && c.column == column && (c.schema == "" || schema == "" || c.schema == schema) {
			return c.method
		}
	}
	return None
}

// tableColumns returns the masked columns of schema.table (schema "" = any).
func (s *Set) tableColumns(schema, table string) map[string]Method {
	var m map[string]Method
	for _, c := range s.cols {
		if c.table == table && (c.schema == "" || schema == "" || c.schema == schema) {
			if m == nil {
				m = make(map[string]Method)
			}
			if _, ok := m[c.column]; !ok {
				m[c.column] = c.method
			}
		}
	}
	return m
}

// allowed reports whether the function schema.name is allow-listed.
func (s *Set) allowed(schema, name string) bool {
	for _, a := range s.allow {
		if glob.Match(a, name) || (schema != "" && glob.Match(a, schema+"."+name)) {
			return true
		}
	}
	return false
}

// macer is the keyed hash (HMAC-SHA-256) of a value's canonical form, the
// same in text and binary format (canonical). One belongs to one goroutine
// at a time (a session's Hasher, or a Columns): keyed once, reset for each
// value, its sum reused, so hashing a value allocates nothing. Values
// hashed before are answered from the Policy's memo.
type macer struct {
	h   hash.Hash
	key *byte // the key h was made with (its first byte: a Policy's own copy)
	sum []byte
}

// macLen is how much of a MAC the methods use (hashValue) and the memo keeps.
const macLen = 16

func (m *macer) mac(key []byte, memo *macMemo, canonical []byte) []byte {
	var id memoKey
	if memo != nil {
		id = memo.id(canonical)
		if v, ok := memo.get(id); ok {
			m.sum = append(m.sum[:0], v[:]...)
			return m.sum
		}
	}
	var kp *byte
	if len(key) > 0 {
		kp = &key[0]
	}
	if m.h == nil || m.key != kp {
		m.h, m.key = hmac.New(sha256.New, key), kp
	} else {
		m.h.Reset()
	}
	_, _ = m.h.Write(canonical)
	m.sum = m.h.Sum(m.sum[:0])
	if memo != nil {
		memo.put(id, [macLen]byte(m.sum[:macLen]))
	}
	return m.sum
}

// macMemo remembers the MACs of values hashed before, for every session of
// a Policy (so of one key): the same value, the same MAC, whoever reads
// it. It holds no value: a value is known by two 64-bit hashes of it under
// seeds of this process (hash/maphash), which nobody outside sees, so two
// values that differ share an entry with a probability of about 2^-128 per
// pair. It is a table of memoSlots slots (2.5 MiB, made at the first
// value), each holding the last value hashed into it; each slot is a
// seqlock, so a lookup takes no lock and a reader never sees half of
// another's write (it sees a miss instead). Safe for concurrent use.
type macMemo struct {
	seeds [2]maphash.Seed
	tab   atomic.Pointer[[memoSlots]memoSlot]
}

type memoKey [2]uint64

// memoSlot: seq is even when the slot is stable, odd while it is written.
type memoSlot struct {
	seq    atomic.Uint64
	k0, k1 atomic.Uint64
	m0, m1 atomic.Uint64
}

const memoSlots = 1 << 16

func newMacMemo() *macMemo {
	return &macMemo{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (mm *macMemo) id(v []byte) memoKey {
	return memoKey{maphash.Bytes(mm.seeds[0], v), maphash.Bytes(mm.seeds[1], v)}
}

func (mm *macMemo) get(k memoKey) (v [macLen]byte, ok bool) {
	tab := mm.tab.Load()
	if tab == nil {
		return v, false
	}
	sl := &tab[k[0]%memoSlots]
	seq := sl.seq.Load()
	if seq == 0 || seq&1 != 0 {
		return v, false
	}
	k0, k1, m0, m1 := sl.k0.Load(), sl.k1.Load(), sl.m0.Load(), sl.m1.Load()
	if sl.seq.Load() != seq || k0 != k[0] || k1 != k[1] {
		return v, false
	}
	binary.LittleEndian.PutUint64(v[:8], m0)
	binary.LittleEndian.PutUint64(v[8:], m1)
	return v, true
}

func (mm *macMemo) put(k memoKey, v [macLen]byte) {
	tab := mm.tab.Load()
	if tab == nil {
		mm.tab.CompareAndSwap(nil, new([memoSlots]memoSlot))
		tab = mm.tab.Load()
	}
	sl := &tab[k[0]%memoSlots]
	seq := sl.seq.Load()
	if seq&1 != 0 || !sl.seq.CompareAndSwap(seq, seq+1) {
		return // another writer has it: this value is not kept
	}
	sl.k0.Store(k[0])
	sl.k1.Store(k[1])
	sl.m0.Store(binary.LittleEndian.Uint64(v[:8]))
	sl.m1.Store(binary.LittleEndian.Uint64(v[8:]))
	sl.seq.Store(seq + 2)
}
