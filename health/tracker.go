package health

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// observation is the outcome of one probe of one backend.
type observation struct {
	addr       string
	start, end time.Time // local clock around the probe query
	err        error     // nil: the fields below are valid

	inRecovery bool
	walLSN     int64 // primary: pg_current_wal_lsn()
	timeline   int   // primary: insert timeline; replica: WAL receiver's timeline
	hasReplay  bool
	replayLSN  int64 // replica: pg_last_wal_replay_lsn()
	receiveLSN int64 // replica: pg_last_wal_receive_lsn() (0 = none)
	pauseState string
	receiver   string // pg_stat_wal_receiver.status, "" when there is no receiver
}

// tracked is the state machine of one backend.
type tracked struct {
	b           Backend
	ok          bool // the last probe succeeded
	fenced      bool
	lagRemoved  bool // removed for lag: returns below half the limits
	oldTimeline bool // a replica receiving a timeline below the primary's

	announced     bool // the first probe's outcome has been logged
	announcedRole Role // role at the last log line
	authFailing   bool // the last probe's login was refused (SQLSTATE class 28)
}

// tracker turns observations into snapshots. It does no I/O and reads no
// clock: every time comes with the observations. Not safe for concurrent
// use (the Monitor serialises calls).
type tracker struct {
	lim         limits
	order       []string
	backends    map[string]*tracked
	primary     string // elected primary (may be down now); "" none yet
	primaryTL   int    // its timeline when the history started
	maxTimeline int    // highest primary timeline ever seen
	hist        history
	log         *zap.Logger
}

func newTracker(cfg Config, log *zap.Logger, now time.Time) *tracker {
	t := &tracker{backends: map[string]*tracked{}, log: log}
	t.setConfig(cfg, now)
	return t
}

// setConfig applies a new backend list and new limits.
func (t *tracker) setConfig(cfg Config, now time.Time) {
	t.lim = cfg.limits()
	t.hist.window = t.lim.historyWindow()
	t.order = append(t.order[:0], cfg.Backends...)
	keep := make(map[string]bool, len(t.order))
	for _, a := range t.order {
		keep[a] = true
		if t.backends[a] == nil {
			t.backends[a] = &tracked{b: Backend{Addr: a, State: StateDown, Reason: "not probed yet", Since: now}}
		}
	}
	for a := range t.backends {
		if !keep[a] {
			delete(t.backends, a)
		}
	}
	if t.primary != "" && !keep[t.primary] {
		t.primary, t.primaryTL = "", 0
		t.hist.reset()
	}
	// New limits: re-judge every replica on its last measured lag.
	for _, a := range t.order {
		tb := t.backends[a]
		if tb.ok && tb.b.Role == RoleReplica {
			t.judgeLag(tb)
		}
		t.setState(tb, now)
	}
}

// observe applies one probe result.
func (t *tracker) observe(o observation) {
	tb := t.backends[o.addr]
	if tb == nil {
		return // removed while its probe was in flight
	}
	b := &tb.b
	b.LastProbe = o.end
	b.Probes++
	if o.err != nil {
		tb.ok = false
		b.ProbeFailures++
		b.LastError = o.err.Error()
		tb.fenced = false
		auth := isAuthError(o.err)
		if auth && !tb.authFailing {
			tb.announced = false // a refused login is logged even when the backend was down already
		}
		tb.authFailing = auth
		t.elect(o.end)
		t.setStateWithReason(tb, StateDown, shortError(o.err), o.end)
		return
	}
	tb.ok = true
	tb.authFailing = false
	b.LastError = ""
	b.Timeline = o.timeline
	if o.inRecovery {
		b.Role = RoleReplica
		b.LSN = o.replayLSN
		b.ReplayPaused = o.pauseState != "" && o.pauseState != "not paused"
		b.Streaming = o.receiver == "streaming"
		tb.fenced = false
	} else {
		b.Role = RolePrimary
		b.LSN = o.walLSN
		b.ReplayPaused, b.Streaming = false, false
		b.LagSeconds, b.LagBytes, b.LagKnown = 0, 0, true
	}
	t.elect(o.end)
	if !o.inRecovery && o.addr == t.primary && !tb.fenced {
		t.hist.add(o.start, o.walLSN)
	}
	if o.inRecovery {
		t.measureLag(tb, o)
	}
	t.setState(tb, o.end)
}

// elect chooses the primary among the reachable backends that report
// not-in-recovery: the highest timeline wins (the incumbent on a tie, else
// the first in configuration order); every other one is fenced.
func (t *tracker) elect(now time.Time) {
	best := ""
	maxTL := t.maxTimeline
	for _, a := range t.order {
		tb := t.backends[a]
		if tb.ok && tb.b.Role == RolePrimary && tb.b.Timeline > maxTL {
			maxTL = tb.b.Timeline
		}
	}
	t.maxTimeline = maxTL
	for _, a := range t.order {
		tb := t.backends[a]
		if !tb.ok || tb.b.Role != RolePrimary || tb.b.Timeline < maxTL {
			continue
		}
		if best == "" || a == t.primary {
			best = a
		}
	}
	for _, a := range t.order {
		tb := t.backends[a]
		wasFenced := tb.fenced
		tb.fenced = tb.ok && tb.b.Role == RolePrimary && a != best
		if tb.fenced != wasFenced {
			t.setState(tb, now)
		}
	}
	if best == "" {
		return // keep the identity: the same primary may come back
	}
	if best != t.primary || t.backends[best].b.Timeline != t.primaryTL {
		if t.primary != "" {
			t.log.Info("primary changed", zap.String("backend", best), zap.String("previous", t.primary),
				zap.Int("timeline", t.backends[best].b.Timeline), zap.Int("previous_timeline", t.primaryTL))
		}
		t.primary, t.primaryTL = best, t.backends[best].b.Timeline
		t.hist.reset()
	}
}

// primaryUp reports whether the elected primary answered its last probe.
func (t *tracker) primaryUp() bool {
	tb := t.backends[t.primary]
	return tb != nil && tb.ok && !tb.fenced && tb.b.Role == RolePrimary
}

// measureLag computes a replica's lag at its probe time against the primary
// history, then applies the hysteresis.
func (t *tracker) measureLag(tb *tracked, o observation) {
	b := &tb.b
	// A replica still receiving an older timeline than the primary's follows
	// a primary that is gone or fenced: its LSNs are not comparable.
	tb.oldTimeline = t.primaryUp() && o.timeline > 0 && o.timeline < t.primaryTL
	if tb.oldTimeline {
		b.LagKnown = false
		return
	}
	if !t.primaryUp() || !o.hasReplay {
		b.LagKnown = false // keep the last values: unknown, not growing
		return
	}
	secs, bytes, ok := t.hist.lag(o.end, o.replayLSN)
	if !ok {
		b.LagKnown = false
		return
	}
	b.LagSeconds, b.LagBytes, b.LagKnown = secs.Seconds(), bytes, true
	t.judgeLag(tb)
}

// judgeLag applies the limits with hysteresis to the last measured lag.
func (t *tracker) judgeLag(tb *tracked) {
	b := &tb.b
	over := (t.lim.maxLag > 0 && b.LagSeconds > t.lim.maxLag.Seconds()) ||
		(t.lim.maxLagBytes > 0 && b.LagBytes > t.lim.maxLagBytes)
	belowHalf := (t.lim.maxLag == 0 || b.LagSeconds < t.lim.maxLag.Seconds()/2) &&
		(t.lim.maxLagBytes == 0 || b.LagBytes < t.lim.maxLagBytes/2)
	switch {
	case over:
		tb.lagRemoved = true
	case tb.lagRemoved && belowHalf:
		tb.lagRemoved = false
	}
}

// setState derives the state and reason of a backend from its tracked data.
func (t *tracker) setState(tb *tracked, now time.Time) {
	b := &tb.b
	switch {
	case !tb.ok:
		if b.Probes == 0 {
			return // "not probed yet" stays
		}
		t.setStateWithReason(tb, StateDown, b.Reason, now)
	case b.Role == RolePrimary && tb.fenced:
		cur := t.backends[t.primary]
		reason := fmt.Sprintf("not in recovery on timeline %d", b.Timeline)
		switch {
		case cur != nil && t.primary != b.Addr && b.Timeline == cur.b.Timeline:
			reason += fmt.Sprintf(", same as primary %s", t.primary)
		case b.Timeline < t.maxTimeline:
			reason += fmt.Sprintf(", below timeline %d of the current primary", t.maxTimeline)
		}
		t.setStateWithReason(tb, StateFenced, reason, now)
	case b.Role == RolePrimary:
		t.setStateWithReason(tb, StateUp, fmt.Sprintf("primary on timeline %d", b.Timeline), now)
	case tb.oldTimeline:
		t.setStateWithReason(tb, StateLagging, fmt.Sprintf("receives timeline %d, below timeline %d of primary %s", b.Timeline, t.primaryTL, t.primary), now)
	case tb.lagRemoved:
		t.setStateWithReason(tb, StateLagging, t.lagReason(b, true), now)
	default:
		t.setStateWithReason(tb, StateUp, t.lagReason(b, false), now)
	}
}

// lagReason explains a replica's state in the words the router repeats.
func (t *tracker) lagReason(b *Backend, removed bool) string {
	var r string
	if !b.LagKnown {
		if b.Probes == 0 || (b.LagSeconds == 0 && b.LagBytes == 0) {
			r = "lag unknown (no primary)"
		} else {
			r = fmt.Sprintf("lag unknown (no primary), last %s, %s", fmtSeconds(b.LagSeconds), FormatSize(b.LagBytes))
		}
	} else {
		r = fmt.Sprintf("lag %s, %s", fmtSeconds(b.LagSeconds), FormatSize(b.LagBytes))
	}
	if removed {
		switch {
		case t.lim.maxLag > 0 && b.LagSeconds > t.lim.maxLag.Seconds():
			r = fmt.Sprintf("lag %s > %s", fmtSeconds(b.LagSeconds), t.lim.maxLag)
		case t.lim.maxLagBytes > 0 && b.LagBytes > t.lim.maxLagBytes:
			r = fmt.Sprintf("lag %s > %s", FormatSize(b.LagBytes), FormatSize(t.lim.maxLagBytes))
		default:
			r += ": back below half the limit"
		}
	}
	if b.ReplayPaused {
		r += ", replay paused"
	}
	if !b.Streaming {
		r += ", WAL receiver not streaming"
	}
	return r
}

func (t *tracker) setStateWithReason(tb *tracked, s State, reason string, now time.Time) {
	b := &tb.b
	prev := b.State
	b.Reason = reason
	b.State = s
	if prev != s {
		b.Since = now
	}
	if tb.announced && prev == s && tb.announcedRole == b.Role {
		return
	}
	tb.announced, tb.announcedRole = true, b.Role
	fields := []zap.Field{zap.String("backend", b.Addr), zap.Stringer("role", b.Role),
		zap.Stringer("state", s), zap.Stringer("previous_state", prev), zap.String("reason", reason)}
	switch {
	case s == StateFenced:
		t.log.Error("backend fenced: it reports not-in-recovery but is not the primary; no sessions go to it", fields...)
	case s == StateDown && tb.authFailing:
		fields = append(fields, zap.String("hint", authHint))
		t.log.Warn("backend state changed", fields...)
	case s == StateDown: // also when the first probe fails: never seen up
		t.log.Warn("backend state changed", fields...)
	default:
		t.log.Info("backend state changed", fields...)
	}
}

// authHint is what to check when the backend refused the health check's
// login.
const authHint = "the backend refused the health check's login: check health.user and its password " +
	"(PGPROXY_HEALTH_PASSWORD; a role with LOGIN IN ROLE pg_monitor) and the backend's pg_hba.conf for this proxy's address"

// isAuthError reports a login the backend refused: SQLSTATE class 28
// (28P01 wrong password, 28000 no pg_hba.conf entry or role cannot log in).
func isAuthError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "28")
}

// snapshot builds an immutable snapshot of the current state.
func (t *tracker) snapshot(now time.Time) *Snapshot {
	s := &Snapshot{Taken: now, Interval: t.lim.interval, Backends: make([]Backend, len(t.order)), PrimaryIndex: -1}
	for i, a := range t.order {
		tb := t.backends[a]
		s.Backends[i] = tb.b
		if a == t.primary && tb.b.State == StateUp && tb.b.Role == RolePrimary {
			s.PrimaryIndex = i
		}
	}
	return s
}

func fmtSeconds(s float64) string { return fmt.Sprintf("%.1fs", s) }

// FormatSize renders a byte count like pg_size_pretty: "8191 bytes",
// "7960 kB", "12 MB".
func FormatSize(n int64) string {
	if n < 10*1024 && n > -10*1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	units := [...]string{"kB", "MB", "GB", "TB"}
	f, u := float64(n)/1024, 0
	for (f >= 10*1024 || f <= -10*1024) && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%.0f %s", f, units[u])
}

// shortError is the innermost cause of a probe failure, for Reason
// ("connection refused", "probe timed out", the server's message).
func shortError(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Message
	}
	if errors.Is(err, errProbeTimeout) {
		return "probe timed out"
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return "probe timed out"
	}
	for {
		var next error
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			next = u.Unwrap()
		case interface{ Unwrap() []error }:
			if errs := u.Unwrap(); len(errs) == 1 {
				next = errs[0]
			}
		}
		if next == nil {
			return err.Error()
		}
		err = next
	}
}
