package app

import (
	"fmt"
	"sync/atomic"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/lineage"
	"github.com/ofitec/pgproxy/masking"
	"github.com/ofitec/pgproxy/proxy"
)

// maskingHolder owns the masking policy in force (swapped on reload) and
// the catalogs of the backends (read as health.user; their caches are
// emptied on reload). Safe for concurrent use.
type maskingHolder struct {
	policy   atomic.Pointer[masking.Policy] // nil: no rules
	login    atomic.Pointer[masking.Login]
	catalogs *masking.Catalogs
}

func newMaskingHolder() *maskingHolder {
	h := &maskingHolder{}
	h.catalogs = masking.NewCatalogs(func() masking.Login {
		if l := h.login.Load(); l != nil {
			return *l
		}
		return masking.Login{}
	})
	return h
}

// set builds the policy of cfg and puts it in force; on error nothing changes.
func (h *maskingHolder) set(cfg *configs.Config) error {
	p, err := maskingPolicy(cfg)
	if err != nil {
		return err
	}
	h.store(cfg, p)
	return nil
}

// store puts p, built from cfg, in force for new sessions and empties the
// catalog caches.
func (h *maskingHolder) store(cfg *configs.Config, p *masking.Policy) {
	h.login.Store(&masking.Login{User: cfg.Health.User, Password: cfg.Health.Password, Timeout: cfg.Health.Timeout})
	h.policy.Store(p)
	h.catalogs.Invalidate()
}

// session is proxy.Config.Masking.
func (h *maskingHolder) session(user, database, applicationName, backend string) (*masking.Set, masking.Catalog) {
	set := h.policy.Load().Match(user, database, applicationName)
	if set == nil {
		return nil, nil
	}
	return set, h.catalogs.Get(backend, database)
}

func (h *maskingHolder) wire(pc *proxy.Config) { pc.Masking = h.session }

func (h *maskingHolder) close() { h.catalogs.Close() }

// maskingPolicy turns masking.* (and the pii columns of lineage.catalog,
// when a rule asks for them) into a masking.Policy; nil without rules.
func maskingPolicy(cfg *configs.Config) (*masking.Policy, error) {
	if len(cfg.Masking.Rules) == 0 {
		return nil, nil
	}
	mc := masking.Config{AllowFunctions: cfg.Masking.AllowFunctions, Key: []byte(cfg.Masking.Key)}
	needCatalog := false
	for i, r := range cfg.Masking.Rules {
		rule := masking.Rule{User: r.Match.User, Database: r.Match.Database, ApplicationName: r.Match.ApplicationName,
			Columns: map[string]masking.Method{}}
		for col, m := range r.Columns {
			method, err := masking.ParseMethod(m)
			if err != nil {
				return nil, fmt.Errorf("masking.rules[%d].columns.%s: %w", i, col, err)
			}
			rule.Columns[col] = method
		}
		if r.PIIFromCatalog != "" {
			method, err := masking.ParseMethod(r.PIIFromCatalog)
			if err != nil {
				return nil, fmt.Errorf("masking.rules[%d].pii_from_catalog: %w", i, err)
			}
			rule.PIIFromCatalog = method
			needCatalog = true
		}
		mc.Rules = append(mc.Rules, rule)
	}
	if needCatalog {
		cat, err := lineage.LoadCatalog(cfg.Lineage.Catalog)
		if err != nil {
			return nil, fmt.Errorf("masking: pii_from_catalog: %w", err)
		}
		mc.CatalogPII = cat.PIIColumns()
	}
	p, err := masking.New(mc)
	if err != nil {
		return nil, err
	}
	return p, nil
}
