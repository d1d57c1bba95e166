package lineage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"time"
)

// sender delivers one serialized event. Send is called from the worker
// goroutine only, never concurrently; Close is called once, after the last
// Send.
type sender interface {
	Send(ctx context.Context, event []byte) error
	Close() error
}

// permanentError is a delivery failure that retrying cannot fix (4xx).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// StatusError is an HTTP answer outside 2xx.
type StatusError struct {
	Status int
	Body   string // first bytes of the answer, for the log
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("lineage: http status %d", e.Status)
	}
	return fmt.Sprintf("lineage: http status %d: %s", e.Status, e.Body)
}

// Retry policy of the HTTP transport: at most httpMaxAttempts attempts and
// httpMaxElapsed from the first, exponential backoff from httpBackoffBase
// (doubling, capped at httpBackoffMax) with full jitter. Every wait and
// attempt also ends with the caller's ctx.
var (
	httpMaxAttempts = 5
	httpMaxElapsed  = 30 * time.Second
	httpBackoffBase = 200 * time.Millisecond
	httpBackoffMax  = 5 * time.Second
)

// httpSender POSTs each event to {url}/api/v1/lineage (Marquez, or any
// OpenLineage HTTP endpoint).
type httpSender struct {
	endpoint string
	apiKey   string
	timeout  time.Duration // per attempt
	client   *http.Client
	tr       *http.Transport
}

func newHTTPSender(url, apiKey string, timeout time.Duration) *httpSender {
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConns:        2,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: timeout,
	}
	return &httpSender{
		endpoint: strings.TrimRight(url, "/") + "/api/v1/lineage",
		apiKey:   apiKey,
		timeout:  timeout,
		client:   &http.Client{Transport: tr},
		tr:       tr,
	}
}

// Send tries until a 2xx, a 4xx (permanentError, not retried), the attempt
// or time budget is spent, or ctx ends.
func (s *httpSender) Send(ctx context.Context, event []byte) error {
	start := time.Now()
	var err error
	for attempt := 1; ; attempt++ {
		err = s.attempt(ctx, event)
		if err == nil {
			return nil
		}
		var perm *permanentError
		if errors.As(err, &perm) || ctx.Err() != nil {
			return err
		}
		if attempt >= httpMaxAttempts {
			return fmt.Errorf("lineage: giving up after %d attempts: %w", attempt, err)
		}
		wait := backoff(attempt)
		if time.Since(start)+wait > httpMaxElapsed {
			return fmt.Errorf("lineage: giving up after %s: %w", time.Since(start).Round(time.Millisecond), err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("lineage: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// backoff returns the wait before attempt+1: full jitter over an exponential
// ceiling.
func backoff(attempt int) time.Duration {
	ceil := httpBackoffBase << (attempt - 1)
	if ceil > httpBackoffMax || ceil <= 0 {
		ceil = httpBackoffMax
	}
	return time.Duration(rand.Int64N(int64(ceil))) + time.Millisecond
}

func (s *httpSender) attempt(ctx context.Context, event []byte) error {
	actx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, s.endpoint, bytes.NewReader(event))
	if err != nil {
		return &permanentError{fmt.Errorf("lineage: request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	if s.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.apiKey)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("lineage: post: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // reuse the connection
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return &permanentError{&StatusError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}}
	default:
		return &StatusError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
}

func (s *httpSender) Close() error {
	s.tr.CloseIdleConnections()
	return nil
}

// writerSender writes each event as one JSON line.
type writerSender struct {
	w     io.Writer
	close func() error
}

func (s *writerSender) Send(ctx context.Context, event []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	line := make([]byte, 0, len(event)+1)
	line = append(append(line, event...), '\n')
	if _, err := s.w.Write(line); err != nil {
		return fmt.Errorf("lineage: write: %w", err)
	}
	return nil
}

func (s *writerSender) Close() error {
	if s.close == nil {
		return nil
	}
	return s.close()
}

func newFileSender(path string) (*writerSender, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lineage: file transport: %w", err)
	}
	return &writerSender{w: f, close: f.Close}, nil
}
