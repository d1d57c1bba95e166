package metabase

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestErrorMessage(t *testing.T) {
	cases := []struct{ body, want string }{
		{`{"errors":{"visualization_settings":"value must be a map."}}`, "visualization_settings: value must be a map."},
		{`{"errors":{"b":"second","a":"first"}}`, "a: first; b: second"},
		{`{"errors":{"details":{"host":"bad"}}}`, `details: {"host":"bad"}`},
		{`{"message":"Connection refused","errors":{}}`, "Connection refused"},
		{"Unauthenticated", "Unauthenticated"},
		{`"API endpoint does not exist."`, "API endpoint does not exist."},
		{"  multi\n line\ttext ", "multi line text"},
		{strings.Repeat("x", 1000), strings.Repeat("x", maxMessageChars) + "…"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := errorMessage([]byte(tc.body)); got != tc.want {
			t.Errorf("errorMessage(%.40q) = %q, want %q", tc.body, got, tc.want)
		}
	}
}

func FuzzErrorMessage(f *testing.F) {
	f.Add([]byte(`{"errors":{"a":"b"}}`))
	f.Add([]byte(`{"message":1}`))
	f.Add([]byte("Unauthenticated"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m := errorMessage(b); len([]rune(m)) > maxMessageChars+1 {
			t.Fatalf("message of %d runes", len([]rune(m)))
		}
	})
}

func TestRetryable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Err: errors.New("connection reset")}
	cases := []struct {
		method string
		status int
		err    error
		want   bool
	}{
		{"POST", 503, nil, true},
		{"GET", 503, nil, true},
		{"POST", 500, nil, false},
		{"POST", 401, nil, false},
		{"GET", 404, nil, false},
		{"POST", 0, dial, true},
		{"POST", 0, read, false}, // the POST may have been applied: never duplicate a create
		{"GET", 0, read, true},
		{"PUT", 0, read, true},
		{"GET", 0, context.Canceled, false},
		{"GET", 0, context.DeadlineExceeded, false},
	}
	for _, tc := range cases {
		if got := retryable(tc.method, tc.status, tc.err); got != tc.want {
			t.Errorf("retryable(%s, %d, %v) = %v, want %v", tc.method, tc.status, tc.err, got, tc.want)
		}
	}
}

func testClient(t *testing.T, url string) *Client {
	t.Helper()
	c, err := NewClient(url, ClientOptions{Backoff: time.Millisecond, Attempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestDoRetriesOnlyWhatIsSafe(t *testing.T) {
	defer goleak.VerifyNone(t)
	cases := []struct {
		name     string
		method   string
		handler  func(n int64, w http.ResponseWriter, r *http.Request)
		attempts int64
		status   int // of the final error; 0 = success
	}{
		{"503 then ok", "POST", func(n int64, w http.ResponseWriter, _ *http.Request) {
			if n < 3 {
				w.WriteHeader(503)
				return
			}
			_, _ = w.Write([]byte(`{"id":7}`))
		}, 3, 0},
		{"503 forever gives up", "GET", func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, 4, 503},
		{"500 not retried", "PUT", func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(500) }, 1, 500},
		{"401 not retried", "POST", func(_ int64, w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(401)
			_, _ = w.Write([]byte(`{"errors":{"password":"did not match stored password"}}`))
		}, 1, 401},
		{"connection cut on POST not retried", "POST", hangUp, 1, -1},
		{"connection cut on GET retried", "GET", func(n int64, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				hangUp(n, w, r)
				return
			}
			_, _ = w.Write([]byte(`{"id":7}`))
		}, 2, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == "POST" && r.Header.Get("Content-Type") != "application/json" {
					t.Errorf("POST without Content-Type: application/json")
				}
				tc.handler(n.Add(1), w, r)
			}))
			defer ts.Close()
			c := testClient(t, ts.URL)
			var out struct{ ID int }
			var body any
			if tc.method != "GET" {
				body = map[string]any{}
			}
			err := c.do(context.Background(), tc.method, "/api/x", nil, body, &out)
			if got := n.Load(); got != tc.attempts {
				t.Errorf("%d attempts, want %d", got, tc.attempts)
			}
			switch {
			case tc.status == 0 && (err != nil || out.ID != 7):
				t.Errorf("err %v, out %+v", err, out)
			case tc.status > 0 && StatusOf(err) != tc.status:
				t.Errorf("err %v, want status %d", err, tc.status)
			case tc.status < 0 && err == nil:
				t.Error("want a network error")
			}
			c.CloseIdleConnections()
		})
	}
}

func hangUp(_ int64, w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

func TestDialErrorsAreRetriedEvenForPOST(t *testing.T) {
	var dials atomic.Int64
	refuse := &http.Transport{DialContext: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	}}
	c, err := NewClient("http://metabase:3000", ClientOptions{HTTPClient: &http.Client{Transport: refuse},
		Backoff: time.Millisecond, Attempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	err = c.do(context.Background(), "POST", "/api/card", nil, map[string]any{}, nil)
	var ne *net.OpError
	if !errors.As(err, &ne) || ne.Op != "dial" {
		t.Fatalf("err %v, want a dial error", err)
	}
	if n := dials.Load(); n != 4 {
		t.Errorf("%d dials, want 4 (a POST that never reached Metabase is safe to resend)", n)
	}
}

func TestFindDatabase(t *testing.T) {
	defer goleak.VerifyNone(t)
	want := Database{Name: "OFITEC (réplica)", Engine: "postgres", Host: "pgproxy", DBName: "ofitec"}
	cases := []struct {
		name, body string
		id         int
		err        string
	}{
		{"by name, host and dbname; lowest id", `{"data":[
			{"id":1,"name":"Sample Database","engine":"h2","is_sample":true,"details":{}},
			{"id":7,"name":"OFITEC (réplica)","engine":"postgres","details":{"host":"other","dbname":"ofitec"}},
			{"id":6,"name":"OFITEC (réplica)","engine":"postgres","details":{"host":"pgproxy","dbname":"ofitec"}},
			{"id":5,"name":"OFITEC (réplica)","engine":"postgres","details":{"host":"pgproxy","dbname":"ofitec"}}],"total":4}`, 5, ""},
		{"none", `{"data":[],"total":0}`, 0, ""},
		{"plain array (before 0.40)", `[{"id":3,"name":"OFITEC (réplica)","engine":"postgres","details":{"host":"pgproxy","dbname":"ofitec"}}]`, 3, ""},
		{"details hidden", `{"data":[{"id":4,"name":"OFITEC (réplica)","engine":"postgres"}],"total":1}`, 0, "without its connection details"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(tc.body)) }))
			defer ts.Close()
			c := testClient(t, ts.URL)
			defer c.CloseIdleConnections()
			got, err := findDatabase(context.Background(), c, want)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("err %v, want %q", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case tc.id == 0 && got != nil, tc.id != 0 && (got == nil || got.ID != tc.id):
				t.Errorf("found %+v, want id %d", got, tc.id)
			}
		})
	}
}
