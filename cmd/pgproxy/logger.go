package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/configs"
)

// newLogger builds the zap logger from log.level and log.format. Every
// line it writes keeps two rules, whoever logs it (app, health, proxy):
// a duration is written in seconds with its unit in the key
// (zap.Duration("duration", d) → "duration_s": 1.5), and a user info
// password or password=... inside a string or error field is replaced by
// ******** (configs.RedactSecrets).
func newLogger(c configs.Log, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	level, err := zap.ParseAtomicLevel(c.Level)
	if err != nil {
		return nil, level, fmt.Errorf("log.level: %w", err)
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if c.Format == "console" {
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	} else {
		enc = zapcore.NewJSONEncoder(encCfg)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(safeCore{core}), level, nil
}

// safeCore rewrites the fields of every entry (see newLogger) before the
// core it wraps encodes them.
type safeCore struct{ zapcore.Core }

func (c safeCore) With(fields []zapcore.Field) zapcore.Core {
	return safeCore{c.Core.With(safeFields(fields))}
}

func (c safeCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c safeCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	e.Message = configs.RedactSecrets(e.Message)
	return c.Core.Write(e, safeFields(fields))
}

// safeFields returns fields with durations in seconds under a "_s" key and
// secrets redacted; fields is not modified.
func safeFields(fields []zapcore.Field) []zapcore.Field {
	var out []zapcore.Field
	for i, f := range fields {
		g, changed := safeField(f)
		if !changed {
			if out != nil {
				out = append(out, f)
			}
			continue
		}
		if out == nil {
			out = append(make([]zapcore.Field, 0, len(fields)), fields[:i]...)
		}
		out = append(out, g)
	}
	if out == nil {
		return fields
	}
	return out
}

func safeField(f zapcore.Field) (zapcore.Field, bool) {
	switch f.Type {
	case zapcore.DurationType:
		key := f.Key
		if !strings.HasSuffix(key, "_s") {
			key += "_s"
		}
		return zap.Float64(key, time.Duration(f.Integer).Seconds()), true
	case zapcore.StringType:
		if r := configs.RedactSecrets(f.String); r != f.String {
			return zap.String(f.Key, r), true
		}
	case zapcore.ErrorType:
		if err, ok := f.Interface.(error); ok && err != nil {
			if msg := err.Error(); configs.RedactSecrets(msg) != msg {
				return zap.String(f.Key, configs.RedactSecrets(msg)), true
			}
		}
	}
	return f, false
}
