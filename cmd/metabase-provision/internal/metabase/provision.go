package metabase

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

// Options are the inputs of [Provision].
type Options struct {
	// Config is the desired state (required).
	Config *Config
	// Credentials authenticate the job (see [CredentialsFromEnv]).
	Credentials Credentials
	// DryRun prints the plan and changes nothing.
	DryRun bool
	// WaitTimeout bounds the wait for /api/health (default 5m).
	WaitTimeout time.Duration
	// Out receives progress lines, the plan and the result (default: discarded).
	Out io.Writer
}

// Result is what a run did (or, for a dry run, would do).
type Result struct {
	Version Version
	// Setup is true when the first-run setup ran (or would run).
	Setup   bool
	Plan    *Plan
	Summary Summary
}

// ErrNoCredentials: neither MB_API_KEY nor MB_USER/MB_PASS is set.
var ErrNoCredentials = errors.New("no credentials: set MB_API_KEY, or MB_USER and MB_PASS")

// Provision waits for Metabase, checks its version, runs the first-run setup
// if needed, logs in, reads the current state, prints the plan and applies
// it (unless DryRun). Errors name what the job was doing and, for API
// failures, wrap an *APIError with the HTTP status and Metabase's message.
func Provision(ctx context.Context, c *Client, opts Options) (*Result, error) {
	cfg := opts.Config
	if cfg == nil {
		return nil, errors.New("no config")
	}
	out := opts.Out
	if out == nil {
		out = io.Discard
	}
	say := func(s string) { fmt.Fprintln(out, s) }
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = 5 * time.Minute
	}
	cred := opts.Credentials
	if cred.APIKey == "" && (cred.User == "" || cred.Password == "") {
		return nil, ErrNoCredentials
	}

	say(fmt.Sprintf("waiting for Metabase at %s", redactURL(cfg.Metabase.URL)))
	if err := c.WaitHealthy(ctx, opts.WaitTimeout, say); err != nil {
		return nil, err
	}
	props, err := c.SessionProperties(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading session properties: %w", err)
	}
	v, err := ParseVersion(props.Version.Tag)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedVersion, err)
	}
	if err := checkSupported(v); err != nil {
		return nil, err
	}
	if cred.APIKey != "" && !v.AtLeast(apiKeysSince) {
		return nil, fmt.Errorf("Metabase %s has no API keys (0.%d+): use MB_USER and MB_PASS", v, apiKeysSince)
	}
	say(fmt.Sprintf("Metabase %s is ready", v))
	res := &Result{Version: v}

	var st *state
	if !props.HasUserSetup {
		res.Setup = true
		if opts.DryRun {
			say("fresh instance: the first-run setup would create the admin user")
			st = emptyState(v)
		} else if err := setup(ctx, c, cfg, cred, props, say); err != nil {
			return nil, err
		}
	}
	if st == nil {
		if err := login(ctx, c, cred, res.Setup, say); err != nil {
			return nil, err
		}
		say("reading what exists")
		if st, err = readState(ctx, c, cfg, v); err != nil {
			return nil, err
		}
	}

	p := buildPlan(cfg, st)
	p.Setup = res.Setup && opts.DryRun
	res.Plan = p
	res.Summary = p.Summary()
	say("plan:")
	p.Print(out)
	if opts.DryRun {
		say(fmt.Sprintf("dry run: would do %s; nothing was changed", res.Summary))
		return res, nil
	}
	if err := p.check(cfg); err != nil {
		return nil, err
	}
	if err := apply(ctx, c, cfg, p, say); err != nil {
		return nil, err
	}
	say(fmt.Sprintf("done: %s", res.Summary))
	return res, nil
}

func setup(ctx context.Context, c *Client, cfg *Config, cred Credentials, props *Properties, say func(string)) error {
	if cred.AdminEmail == "" || cred.AdminPassword == "" {
		return errors.New("fresh Metabase instance: set MB_ADMIN_EMAIL and MB_ADMIN_PASS (or MB_USER and MB_PASS) for the first-run setup")
	}
	if props.SetupToken == nil || *props.SetupToken == "" {
		return errors.New("fresh Metabase instance without a setup token in /api/session/properties")
	}
	say(fmt.Sprintf("fresh instance: running the first-run setup (admin %s)", cred.AdminEmail))
	err := c.Setup(ctx, SetupRequest{
		Token: *props.SetupToken,
		User: SetupUser{FirstName: cfg.Metabase.AdminFirstName, LastName: cfg.Metabase.AdminLastName,
			Email: cred.AdminEmail, Password: cred.AdminPassword},
		Prefs: SetupPrefs{SiteName: cfg.Metabase.SiteName, SiteLocale: cfg.Metabase.SiteLocale},
	})
	if err != nil {
		return fmt.Errorf("running the first-run setup: %w", err)
	}
	return nil
}

// login authenticates: right after the first-run setup with the admin
// session it opened (no API key or other user can exist yet), else with the
// API key when set, else MB_USER/MB_PASS.
func login(ctx context.Context, c *Client, cred Credentials, didSetup bool, say func(string)) error {
	switch {
	case didSetup:
		// The setup's session is the new admin's.
	case cred.APIKey != "":
		c.UseAPIKey(cred.APIKey)
		say("authenticating with the API key")
	default:
		say(fmt.Sprintf("logging in as %s", cred.User))
		if err := c.Login(ctx, cred.User, cred.Password); err != nil {
			return fmt.Errorf("logging in as %s: %w", cred.User, err)
		}
	}
	return nil
}

// redactURL hides a password in a URL's user info (MB_URL may carry one).
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}
