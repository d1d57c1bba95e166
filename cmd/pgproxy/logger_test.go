package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/configs"
)

// Every line of pgproxy's logger writes durations in seconds under a key
// with the unit ("duration_s", not a bare "duration" holding seconds), and
// hides passwords inside URLs and key=value strings, whoever logs them.
func TestLoggerUnitsAndSecrets(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := newLogger(configs.Log{Level: "info", Format: "json"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	const pw = "S3cr3tPW"
	log.With(zap.Duration("startup_timeout", 10*time.Second), zap.String("dsn", "postgres://u:"+pw+"@h/db")).
		Named("proxy").
		Info("session ended", zap.Duration("duration", 1500*time.Millisecond), zap.Duration("idle_s", 2*time.Second),
			zap.Error(errors.New("dial host=h password="+pw+" failed")), zap.String("user", "odoo"))
	line := buf.String()
	if strings.Contains(line, pw) {
		t.Errorf("password logged: %s", line)
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	for k, want := range map[string]any{
		"duration_s": 1.5, "startup_timeout_s": 10.0, "idle_s": 2.0, "user": "odoo", "logger": "proxy",
		"dsn": "postgres://u:********@h/db", "error": "dial host=h password=******** failed",
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v (line %s)", k, m[k], want, line)
		}
	}
	for _, k := range []string{"duration", "startup_timeout", "idle_s_s"} {
		if _, ok := m[k]; ok {
			t.Errorf("key %s present: %s", k, line)
		}
	}
	buf.Reset()
	log.Debug("below the level", zap.Duration("d", time.Second))
	if buf.Len() != 0 {
		t.Errorf("debug line written at info: %s", buf.String())
	}
}
