// Command metabase-provision provisions Metabase idempotently from
// configs/metabase.yaml: the database behind pgproxy's read listener, the
// OFITEC collection tree, native cards and dashboards. Run it on every
// deploy; a second run changes nothing.
//
//	metabase-provision --config configs/metabase.yaml [--dry-run]
//
// Environment: MB_URL, MB_USER, MB_PASS or MB_API_KEY, MB_ADMIN_EMAIL and
// MB_ADMIN_PASS (first-run setup; default MB_USER/MB_PASS), MB_DB_HOST,
// MB_DB_PORT, MB_DB_NAME, MB_DB_USER, MB_DB_PASS. See docs/metabase.md.
//
// Exit status: 0 success, 1 provisioning failed (the message names the step,
// the HTTP status and Metabase's message), 2 bad flags or config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ofitec/pgproxy/cmd/metabase-provision/internal/metabase"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

const usageHead = `usage: metabase-provision [--config FILE] [--dry-run] [flags]

Makes a Metabase instance match the desired state in FILE: the database
behind pgproxy's read listener, the OFITEC collections, cards and
dashboards. Idempotent: a second run changes nothing. See docs/metabase.md.

environment:
  MB_URL                      Metabase base URL (overrides metabase.url)
  MB_USER, MB_PASS            login of a Metabase admin; also the first admin on a fresh instance
  MB_API_KEY                  API key (Metabase 0.49+), used instead of the login when set
  MB_ADMIN_EMAIL, MB_ADMIN_PASS
                              admin created by the first-run setup (default MB_USER, MB_PASS)
  MB_DB_HOST, MB_DB_PORT, MB_DB_NAME, MB_DB_USER
                              override database.host/port/dbname/user: where Metabase reaches
                              pgproxy's read listener
  MB_DB_PASS                  password of database.user; only from the environment, never the file

flags:
`

const usageTail = `
exit status: 0 done, 1 provisioning failed, 2 bad flags, config or missing credentials
`

// run is the whole command; it returns the exit status.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("metabase-provision", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed below, once
	configPath := fs.String("config", "configs/metabase.yaml", "desired state (YAML)")
	dryRun := fs.Bool("dry-run", false, "print the plan and change nothing")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for Metabase to become healthy")
	timeout := fs.Duration("timeout", 15*time.Minute, "deadline for the whole run")
	backoff := fs.Duration("backoff", 500*time.Millisecond, "first wait between retries (doubles up to 10s)")
	verbose := fs.Bool("verbose", false, "log every HTTP request (method, path, status) to stderr")
	usage := func(w io.Writer) {
		fmt.Fprint(w, usageHead)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
		fmt.Fprint(w, usageTail)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "metabase-provision: %v\n\n", err)
		usage(stderr)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "metabase-provision: unexpected arguments: %v\n", fs.Args())
		return 2
	}

	cfg, err := metabase.LoadConfig(*configPath, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "metabase-provision: %v\n", err)
		return 2
	}
	log := zap.NewNop()
	if *verbose {
		log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
			zapcore.AddSync(stderr), zap.DebugLevel))
	}
	client, err := metabase.NewClient(cfg.Metabase.URL, metabase.ClientOptions{Backoff: *backoff, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "metabase-provision: %v\n", err)
		return 2
	}
	defer client.CloseIdleConnections()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	_, err = metabase.Provision(ctx, client, metabase.Options{
		Config:      cfg,
		Credentials: metabase.CredentialsFromEnv(getenv),
		DryRun:      *dryRun,
		WaitTimeout: *wait,
		Out:         stdout,
	})
	if err != nil {
		fmt.Fprintf(stderr, "metabase-provision: %v\n", err)
		if errors.Is(err, metabase.ErrNoCredentials) {
			return 2
		}
		return 1
	}
	return 0
}
