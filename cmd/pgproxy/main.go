// Command pgproxy is the PostgreSQL read-scaling proxy.
//
//	pgproxy serve --config FILE   (also: pgproxy --config FILE)
//	pgproxy check --config FILE
//	pgproxy demo
//	pgproxy version
//
// This file is wiring only: flags, config, logger, signals. The only
// os.Exit of the program is in main.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/app"
	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

const usage = `usage:
  pgproxy serve --config FILE   run the proxy (SIGTERM/SIGINT drain, SIGHUP reloads)
  pgproxy --config FILE         same as serve
  pgproxy check --config FILE   validate the config and print it with secrets redacted
  pgproxy demo                  local primary + 2 replicas with pgproxy in front
  pgproxy version               version, commit, Go version
Every config key is also a flag (--routing.max_lag=5s) and an environment
variable (PGPROXY_ROUTING_MAX_LAG=5s); precedence flag > env > file > default.
`

func run(args []string, env []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "pgproxy %s (commit %s, %s)\n", buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
		return 0
	case "demo":
		return runDemo(args, env, stdout, stderr)
	case "serve", "check":
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "pgproxy: unknown command %q\n%s", cmd, usage)
		return 2
	}

	fs := pflag.NewFlagSet("pgproxy "+cmd, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "YAML config file")
	configs.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	load := func() (*configs.Config, error) {
		return configs.Load(configs.LoadOptions{Path: *path, Flags: fs, Environ: env})
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "pgproxy: invalid configuration:\n%v\n", err)
		return 1
	}
	if cmd == "check" {
		out, err := cfg.Redacted().YAML()
		if err != nil {
			fmt.Fprintln(stderr, "pgproxy:", err)
			return 1
		}
		fmt.Fprintf(stdout, "# configuration OK (secrets redacted)\n%s", out)
		return 0
	}

	log, level, err := newLogger(cfg.Log, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "pgproxy:", err)
		return 1
	}
	defer log.Sync() //nolint:errcheck
	return serve(cfg, load, log, &level)
}

func serve(cfg *configs.Config, load func() (*configs.Config, error), log *zap.Logger, level *zap.AtomicLevel) int {
	a, err := app.New(cfg, log, level)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	a.SetReloader(load)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadDone := make(chan struct{})
	go func() {
		defer close(reloadDone)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if err := a.ReloadFromSource(); err != nil {
					log.Error("reload failed; the old configuration stays in force", zap.Error(err))
				}
			}
		}
	}()
	err = a.Run(ctx)
	stop()
	<-reloadDone
	if err != nil {
		log.Error("pgproxy stopped with an error", zap.Error(err))
		return 1
	}
	return 0
}

// newLogger builds the zap logger from log.level and log.format.
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
	return zap.New(core), level, nil
}
