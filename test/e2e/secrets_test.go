package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/test/fakemarquez"
	"github.com/ofitec/pgproxy/test/pgcluster"
	"github.com/ofitec/pgproxy/test/proxytest"
)

// TestNoSecretsInLogsOrEndpoints: with passwords in the config and in
// client logins, an API key for lineage, canceled queries and statements
// with literals, no log entry at info level or above, no /status, /metrics
// or redacted config output contains a password, a cancel key or a query
// literal.
func TestNoSecretsInLogsOrEndpoints(t *testing.T) {
	reset(t)
	const apiKey = "lineage-api-key-7c1e9a"
	const literal = "LITERAL-c9f1-SECRET"
	const wrongPass = "WRONG-pass-4417"
	m := fakemarquez.New()
	t.Cleanup(m.Close)
	m.SetAPIKey(apiKey)
	p := proxytest.Start(t, cluster, &proxytest.Options{
		YAML: fmt.Sprintf("lineage:\n  enabled: true\n  dataset_namespace: postgres://db:5432\n  transport:\n    type: http\n    url: %s\n", m.URL),
		Env:  []string{"PGPROXY_LINEAGE_TRANSPORT_API_KEY=" + apiKey},
	})
	ctx := ctxT(t, time.Minute)
	scram := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pgcluster.ScramUser, pgcluster.ScramPassword, p.WriteAddr())
	md5 := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pgcluster.MD5User, pgcluster.MD5Password, p.ReadAddr())
	var cancelKeys []string
	for _, dsn := range []string{scram, md5} {
		conn := connect(t, dsn)
		pid, key := conn.PgConn().PID(), conn.PgConn().SecretKey()
		cancelKeys = append(cancelKeys, fmt.Sprint(pid)+"/"+fmt.Sprintf("%x", key))
		_, _ = conn.Exec(ctx, "SELECT '"+literal+"'::text, 1/0")
		_, _ = conn.Exec(ctx, "/*job='secret_job'*/ SELECT count(*) FROM pg_class WHERE relname = '"+literal+"'")
	}
	// A canceled query.
	pc, err := pgconn.Connect(ctx, scram)
	if err != nil {
		t.Fatal(err)
	}
	cancelKeys = append(cancelKeys, fmt.Sprintf("%x", pc.SecretKey()))
	go func() {
		time.Sleep(200 * time.Millisecond)
		_ = pc.CancelRequest(context.Background())
	}()
	_, _ = pc.Exec(ctx, "SELECT pg_sleep(5), '"+literal+"'").ReadAll()
	pc.Close(ctx)
	// A failed login.
	_, _ = pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable", pgcluster.ScramUser, wrongPass, p.WriteAddr()))
	_, _ = m.WaitFor(ctxT(t, 10*time.Second), 2)

	secrets := []string{pgcluster.MonitorPassword, pgcluster.ScramPassword, pgcluster.MD5Password, wrongPass, apiKey, literal}
	var texts []string
	for _, e := range p.Logs.All() {
		if e.Level < zapcore.InfoLevel {
			continue
		}
		fields, _ := json.Marshal(e.ContextMap())
		texts = append(texts, e.Message+" "+string(fields))
	}
	if len(texts) < 5 {
		t.Fatalf("only %d info log entries: the check would be empty", len(texts))
	}
	_, status := p.Get(t, "/status")
	_, metrics := p.Get(t, "/metrics")
	redacted, err := p.App.Config().Redacted().YAML()
	if err != nil {
		t.Fatal(err)
	}
	texts = append(texts, status, metrics, string(redacted))
	for _, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("secret %q leaked in: %.300s", s, text)
			}
		}
		for _, k := range cancelKeys {
			if k != "" && strings.Contains(text, k) {
				t.Errorf("cancel key leaked in: %.300s", text)
			}
		}
	}
	if !strings.HasPrefix(configs.Default().HTTP.Addr, "127.0.0.1:") {
		t.Errorf("HTTP endpoints bind to %q by default, want loopback", configs.Default().HTTP.Addr)
	}
}
