package metabase

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
)

const (
	maxResponseBytes = 32 << 20 // a successful answer larger than this is an error
	maxErrorBytes    = 64 << 10 // error bodies are read up to this much
	maxMessageChars  = 400      // and shortened to this in messages
)

// ClientOptions configure a [Client]. The zero value is usable.
type ClientOptions struct {
	// HTTPClient defaults to a client with a 60s timeout and its own transport.
	HTTPClient *http.Client
	// Attempts per request when Metabase answers 503 or the network fails
	// (default 5). Other failures are never retried: 401s in particular,
	// since Metabase throttles repeated failed logins.
	Attempts int
	// Backoff is the first wait between attempts (default 500ms); it doubles
	// up to MaxBackoff (default 10s).
	Backoff, MaxBackoff time.Duration
	// Logger receives one debug line per request (method, path, status,
	// duration; never bodies or headers). Default: no logging.
	Logger *zap.Logger
}

// Client talks to Metabase's REST API. Authenticate it with
// [Client.Login], [Client.Setup] or [Client.UseAPIKey] before calling
// anything but Health and SessionProperties. It is not safe for concurrent
// use while authenticating.
type Client struct {
	base       *url.URL
	hc         *http.Client
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	log        *zap.Logger

	authHeader, authValue string
}

// NewClient returns a client for the Metabase at baseURL (http or https).
func NewClient(baseURL string, opts ClientOptions) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("metabase url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("metabase url %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{base: u, hc: opts.HTTPClient, attempts: opts.Attempts,
		backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, log: opts.Logger}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 60 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	if c.attempts <= 0 {
		c.attempts = 5
	}
	if c.backoff <= 0 {
		c.backoff = 500 * time.Millisecond
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = 10 * time.Second
	}
	if c.log == nil {
		c.log = zap.NewNop()
	}
	return c, nil
}

// CloseIdleConnections closes the HTTP client's idle keep-alive
// connections (and so their goroutines); call it when done.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

// APIError is a non-2xx answer from Metabase.
type APIError struct {
	Method, Path string
	Status       int
	// Message is Metabase's own message: the "errors" map flattened
	// ("field: message; ..."), the "message" field, or the plain-text body.
	Message string
}

func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, msg)
}

// StatusOf returns the HTTP status of an *APIError in err's chain, or 0.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// errorMessage extracts Metabase's message from an error body.
func errorMessage(body []byte) string {
	var m struct {
		Errors  map[string]any `json:"errors"`
		Message string         `json:"message"`
	}
	trimmed := bytes.TrimSpace(body)
	if json.Unmarshal(trimmed, &m) == nil {
		if len(m.Errors) > 0 {
			keys := make([]string, 0, len(m.Errors))
			for k := range m.Errors {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			parts := make([]string, 0, len(keys))
			for _, k := range keys {
				v := m.Errors[k]
				s, ok := v.(string)
				if !ok {
					b, _ := json.Marshal(v)
					s = string(b)
				}
				parts = append(parts, k+": "+s)
			}
			return shorten(strings.Join(parts, "; "))
		}
		if m.Message != "" {
			return shorten(m.Message)
		}
	}
	var s string
	if json.Unmarshal(trimmed, &s) == nil { // a JSON string body
		return shorten(s)
	}
	return shorten(string(trimmed))
}

func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > maxMessageChars {
		return string(r[:maxMessageChars]) + "…"
	}
	return s
}

// retryable reports whether a failed attempt may be sent again: 503 always
// (Metabase refuses everything while initializing, before doing anything),
// network errors only when the request cannot have reached Metabase or is
// idempotent, so a POST is never duplicated.
func retryable(method string, status int, err error) bool {
	if err == nil {
		return status == http.StatusServiceUnavailable
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return method == http.MethodGet || method == http.MethodPut || method == http.MethodDelete
}

// do sends one API call with retries. body (if non-nil) is sent as JSON;
// out (if non-nil) receives the decoded 2xx answer.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encoding body: %w", method, path, err)
		}
	}
	wait := c.backoff
	for attempt := 1; ; attempt++ {
		status, err := c.once(ctx, method, path, query, payload, out)
		if err == nil {
			return nil
		}
		if attempt >= c.attempts || !retryable(method, status, unwrapNet(err)) {
			return err
		}
		c.log.Debug("metabase retry", zap.String("method", method), zap.String("path", path),
			zap.Int("status", status), zap.Int("attempt", attempt), zap.Error(err))
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		wait = min(wait*2, c.maxBackoff)
	}
}

// netError marks a transport failure (no HTTP status).
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

func unwrapNet(err error) error {
	var ne *netError
	if errors.As(err, &ne) {
		return ne.err
	}
	return nil
}

func (c *Client) once(ctx context.Context, method, path string, query url.Values, payload []byte, out any) (int, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.authHeader != "" {
		req.Header.Set(c.authHeader, c.authValue)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, &netError{err})
	}
	defer resp.Body.Close()
	c.log.Debug("metabase request", zap.String("method", method), zap.String("path", path),
		zap.Int("status", resp.StatusCode), zap.Float64("duration_s", time.Since(start).Seconds()))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
		return resp.StatusCode, &APIError{Method: method, Path: path, Status: resp.StatusCode, Message: errorMessage(b)}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseBytes))
		return resp.StatusCode, nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: reading answer: %w", method, path, &netError{err})
	}
	if len(b) > maxResponseBytes {
		return resp.StatusCode, fmt.Errorf("%s %s: answer larger than %d bytes", method, path, maxResponseBytes)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Health is the answer of GET /api/health.
type Health struct {
	Status   string  `json:"status"`
	Progress float64 `json:"progress"`
}

// WaitHealthy polls GET /api/health until it answers 200, waiting with
// backoff while Metabase answers 503 (initializing) or cannot be reached,
// up to timeout. progress receives a line per wait.
func (c *Client) WaitHealthy(ctx context.Context, timeout time.Duration, progress func(string)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wait := c.backoff
	var last error
	for {
		var h Health
		status, err := c.once(ctx, http.MethodGet, "/api/health", nil, nil, &h)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return notHealthy(timeout, last, err, ctx.Err())
		}
		if !retryable(http.MethodGet, status, unwrapNet(err)) {
			return fmt.Errorf("waiting for Metabase: %w", err)
		}
		last = err
		if status == http.StatusServiceUnavailable {
			progress(fmt.Sprintf("Metabase is initializing; retrying in %s", wait))
		} else {
			progress(fmt.Sprintf("Metabase is not reachable (%v); retrying in %s", err, wait))
		}
		if err := sleep(ctx, wait); err != nil {
			return notHealthy(timeout, last, nil, err)
		}
		wait = min(wait*2, c.maxBackoff)
	}
}

// notHealthy is WaitHealthy's error when its wait ends: one line with the
// last real problem (what an operator acts on), still wrapping the
// context's error for errors.Is. The context's own text ("context deadline
// exceeded") is not repeated after it.
func notHealthy(timeout time.Duration, last, current, ctxErr error) error {
	if last == nil {
		last = current
	}
	if last == nil || errors.Is(last, ctxErr) {
		return fmt.Errorf("waiting for Metabase: not healthy after %s: %w", timeout, ctxErr)
	}
	return &waitError{msg: fmt.Sprintf("waiting for Metabase: not healthy after %s: %v", timeout, last), errs: []error{last, ctxErr}}
}

// waitError is a message with the errors it stands for.
type waitError struct {
	msg  string
	errs []error
}

func (e *waitError) Error() string   { return e.msg }
func (e *waitError) Unwrap() []error { return e.errs }

// Properties is the part of GET /api/session/properties the job uses.
type Properties struct {
	Version struct {
		Tag string `json:"tag"`
	} `json:"version"`
	SetupToken   *string `json:"setup-token"`
	HasUserSetup bool    `json:"has-user-setup"`
}

// SessionProperties reads GET /api/session/properties (no auth needed).
func (c *Client) SessionProperties(ctx context.Context) (*Properties, error) {
	var p Properties
	if err := c.do(ctx, http.MethodGet, "/api/session/properties", nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// SetupRequest is the body of POST /api/setup.
type SetupRequest struct {
	Token string     `json:"token"`
	User  SetupUser  `json:"user"`
	Prefs SetupPrefs `json:"prefs"`
}

// SetupUser is the first admin.
type SetupUser struct {
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	Email     string `json:"email"`
	Password  string `json:"password"`
}

// SetupPrefs are the site settings sent with the setup.
type SetupPrefs struct {
	SiteName      string `json:"site_name"`
	SiteLocale    string `json:"site_locale"`
	AllowTracking bool   `json:"allow_tracking"`
}

// Setup runs the first-run setup and authenticates with the session it
// returns.
func (c *Client) Setup(ctx context.Context, req SetupRequest) error {
	var s struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/setup", nil, req, &s); err != nil {
		return err
	}
	if s.ID == "" {
		return errors.New("POST /api/setup: answer has no session id")
	}
	c.authHeader, c.authValue = "X-Metabase-Session", s.ID
	return nil
}

// Login opens a session (POST /api/session) and authenticates with it.
func (c *Client) Login(ctx context.Context, user, password string) error {
	var s struct {
		ID string `json:"id"`
	}
	body := map[string]string{"username": user, "password": password}
	if err := c.do(ctx, http.MethodPost, "/api/session", nil, body, &s); err != nil {
		return err
	}
	if s.ID == "" {
		return errors.New("POST /api/session: answer has no session id")
	}
	c.authHeader, c.authValue = "X-Metabase-Session", s.ID
	return nil
}

// UseAPIKey authenticates every request with X-API-Key (Metabase 0.49+).
func (c *Client) UseAPIKey(key string) {
	c.authHeader, c.authValue = "X-API-Key", key
}
