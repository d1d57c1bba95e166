package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// errProbeTimeout marks a probe that ran out of Config.Timeout.
var errProbeTimeout = errors.New("probe timed out")

// probeSQL is the whole probe: one round trip, every role. CASE keeps the
// primary-only functions from running on a replica and vice versa. LSNs are
// returned as bigint byte positions; the primary's timeline is the one of its
// WAL insert position (pg_walfile_name), which changes at promotion without
// waiting for a checkpoint.
const probeSQL = `SELECT r,
 CASE WHEN NOT r THEN (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint END,
 CASE WHEN NOT r THEN ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
 CASE WHEN r THEN (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint END,
 CASE WHEN r THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint END,
 CASE WHEN r THEN pg_get_wal_replay_pause_state() END,
 (SELECT status FROM pg_stat_wal_receiver LIMIT 1),
 (SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1)
FROM pg_is_in_recovery() AS r`

// maxBackoff caps the wait between two connection attempts to a down
// backend (at least one interval).
const maxBackoff = 2 * time.Second

// prober owns the monitoring connection of one backend. It is used by one
// goroutine only.
type prober struct {
	addr    string
	conn    *pgx.Conn
	login   *Config // the config conn was opened with
	fails   int     // consecutive failed connection attempts
	skip    int     // ticks to let pass before the next attempt
	observe func(observation)
	config  func() *Config
}

// run probes every interval until ctx is done, then closes the connection.
func (p *prober) run(ctx context.Context) {
	defer p.closeConn(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	next := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		cfg := p.config()
		if o, ok := p.probe(ctx, cfg); ok && ctx.Err() == nil {
			p.observe(o)
		}
		// Keep the cadence; after an overrun start again from now.
		next = next.Add(cfg.Interval)
		now := time.Now()
		if next.Before(now) {
			next = now
		}
		timer.Reset(next.Sub(now))
	}
}

// probe runs one probe within cfg.Timeout. ok is false when no probe was
// made (backing off after failed connection attempts).
func (p *prober) probe(ctx context.Context, cfg *Config) (o observation, ok bool) {
	pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if p.conn != nil && !sameLogin(p.login, cfg) {
		p.closeConn(ctx)
	}
	if p.conn != nil {
		o = p.query(pctx, cfg)
		if o.err == nil || pctx.Err() != nil {
			if o.err != nil {
				p.closeConn(ctx)
			}
			return o, true
		}
		// The connection broke (server restarted, network): redial once
		// within the same time budget.
		p.closeConn(ctx)
	} else if p.skip > 0 {
		p.skip--
		return o, false
	}
	start := time.Now()
	if err := p.dial(pctx, cfg); err != nil {
		p.fails++
		// Back off: 0, 1, 3, 7 ... ticks, at most maxBackoff.
		p.skip = 1<<min(p.fails-1, 16) - 1
		if limit := int(max(maxBackoff, cfg.Interval)/cfg.Interval) - 1; p.skip > limit {
			p.skip = limit
		}
		return observation{addr: p.addr, start: start, end: time.Now(), err: p.timeoutErr(pctx, cfg, err)}, true
	}
	p.fails, p.skip = 0, 0
	o = p.query(pctx, cfg)
	if o.err != nil {
		p.closeConn(ctx)
	}
	return o, true
}

// timeoutErr marks err as a timeout when the probe's budget ran out.
func (p *prober) timeoutErr(pctx context.Context, cfg *Config, err error) error {
	if errors.Is(pctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w after %v: %w", errProbeTimeout, cfg.Timeout, err)
	}
	return err
}

// dial opens the monitoring connection.
func (p *prober) dial(ctx context.Context, cfg *Config) error {
	host, port, err := net.SplitHostPort(p.addr)
	if err != nil {
		return fmt.Errorf("health: backend %q: %w", p.addr, err)
	}
	pc, err := pgx.ParseConfig("host=" + dsnQuote(host) + " port=" + dsnQuote(port) + " sslmode=disable")
	if err != nil {
		return fmt.Errorf("health: backend %q: %w", p.addr, err)
	}
	if cfg.User != "" {
		pc.User = cfg.User
	}
	if cfg.Password != "" {
		pc.Password = cfg.Password
	}
	pc.Database = cfg.Database
	pc.Fallbacks = nil
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if t.ServerName == "" {
			t.ServerName = host
		}
		pc.TLSConfig = t
	}
	pc.ConnectTimeout = cfg.Timeout
	pc.RuntimeParams = map[string]string{
		"application_name":  "pgproxy-health",
		"statement_timeout": strconv.FormatInt(max(cfg.Timeout.Milliseconds(), 1), 10),
	}
	pc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	pc.StatementCacheCapacity = 0
	pc.DescriptionCacheCapacity = 0
	conn, err := pgx.ConnectConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("health: connect %s: %w", p.addr, err)
	}
	p.conn, p.login = conn, cfg
	return nil
}

// query runs probeSQL on the open connection.
func (p *prober) query(ctx context.Context, cfg *Config) observation {
	o := observation{addr: p.addr, start: time.Now()}
	var (
		inRecovery                 bool
		wal, receive, replay       *int64
		timeline, receiverTimeline *int32
		pause, receiver            *string
	)
	err := p.conn.QueryRow(ctx, probeSQL).Scan(&inRecovery, &wal, &timeline, &receive, &replay, &pause, &receiver, &receiverTimeline)
	o.end = time.Now()
	if err != nil {
		o.err = p.timeoutErr(ctx, cfg, fmt.Errorf("health: probe %s: %w", p.addr, err))
		return o
	}
	o.inRecovery = inRecovery
	if wal != nil {
		o.walLSN = *wal
	}
	if timeline != nil {
		o.timeline = int(*timeline)
	} else if receiverTimeline != nil {
		o.timeline = int(*receiverTimeline)
	}
	if receive != nil {
		o.receiveLSN = *receive
	}
	if replay != nil {
		o.replayLSN, o.hasReplay = *replay, true
	}
	if pause != nil {
		o.pauseState = *pause
	}
	if receiver != nil {
		o.receiver = *receiver
	}
	if !inRecovery && wal == nil {
		o.err = fmt.Errorf("health: probe %s: primary returned no WAL position", p.addr)
	}
	return o
}

// closeConn closes the monitoring connection, if any, without waiting long
// for the server.
func (p *prober) closeConn(ctx context.Context) {
	if p.conn == nil {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 100*time.Millisecond)
	defer cancel()
	_ = p.conn.Close(cctx)
	p.conn, p.login = nil, nil
}

// dsnQuote quotes a keyword/value connection string value.
func dsnQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
