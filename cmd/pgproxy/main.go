// Command pgproxy is the PostgreSQL read-scaling proxy.
//
//	pgproxy serve --config FILE   (also: pgproxy --config FILE, pgproxy serve FILE)
//	pgproxy check --config FILE   (also: pgproxy check FILE)
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
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/app"
	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

const usage = `usage: pgproxy [command] [flags] [CONFIG_FILE]

commands:
  serve     run the proxy until SIGTERM/SIGINT (graceful drain); SIGHUP reloads
            the config. The default: "pgproxy --config FILE" is "pgproxy serve --config FILE"
  check     validate the config and print it with secrets redacted (exit 0 valid, 1 not)
  demo      a local primary + 2 streaming replicas with pgproxy in front ("pgproxy demo --help")
  version   version, commit, Go version
  help      this text

The config file is --config FILE or the one argument after the command, as
with pgbouncer: "pgproxy check /etc/pgproxy/pgproxy.yaml".
Every config key except routing.rules is also a flag (--routing.max_lag=5s)
and an environment variable (PGPROXY_ROUTING_MAX_LAG=5s); precedence
flag > env > file > default. Reference: docs/configuration.md.
`

// printUsage writes the usage, then the flags of serve and check.
func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "%s\nflags of serve and check:\n%s", usage, fs.FlagUsages())
}

// exit codes
const (
	exitOK    = 0
	exitError = 1 // invalid configuration, failed start
	exitUsage = 2 // bad command line
)

func run(args []string, env []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		switch args[0] {
		case "serve", "check", "demo", "version", "help":
			cmd, args = args[0], args[1:]
		default:
			if looksLikeFile(args[0]) {
				// "pgproxy FILE": the config file of serve, as "pgbouncer FILE".
				break
			}
			fmt.Fprintf(stderr, "pgproxy: unknown command %q\n\n%s", args[0], usage)
			return exitUsage
		}
	}

	fs := pflag.NewFlagSet("pgproxy "+cmd, pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors and usage are printed below, once
	fs.SortFlags = true
	path := fs.String("config", "", "YAML config `file` (or give it as the one argument)")
	configs.RegisterFlags(fs)

	switch cmd {
	case "version":
		fmt.Fprintf(stdout, "pgproxy %s (commit %s, %s)\n", buildinfo.Version, buildinfo.Commit, buildinfo.GoVersion())
		return exitOK
	case "demo":
		return runDemo(args, env, stdout, stderr)
	case "help":
		printUsage(stdout, fs)
		return exitOK
	}

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			printUsage(stdout, fs)
			return exitOK
		}
		fmt.Fprintf(stderr, "pgproxy %s: %v%s\n\n%s\nEvery flag: pgproxy --help\n", cmd, err, flagHint(err, fs), usage)
		return exitUsage
	}
	switch rest := fs.Args(); {
	case len(rest) > 1:
		fmt.Fprintf(stderr, "pgproxy %s: unexpected arguments %q: give one config file\n", cmd, rest)
		return exitUsage
	case len(rest) == 1 && *path != "" && rest[0] != *path:
		fmt.Fprintf(stderr, "pgproxy %s: two config files, --config %q and %q: give one\n", cmd, *path, rest[0])
		return exitUsage
	case len(rest) == 1:
		*path = rest[0]
	}
	load := func() (*configs.Config, error) {
		return configs.Load(configs.LoadOptions{Path: *path, Flags: fs, Environ: env})
	}
	cfg, err := load()
	if err != nil {
		fmt.Fprintf(stderr, "pgproxy: invalid configuration:\n%v\n", err)
		return exitError
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
	return serve(cfg, *path, load, log, &level)
}

func serve(cfg *configs.Config, path string, load func() (*configs.Config, error), log *zap.Logger, level *zap.AtomicLevel) int {
	a, err := app.New(cfg, log, level)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	a.SetReloader(load)
	a.SetConfigPath(path)
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

// looksLikeFile tells a config file given as "pgproxy FILE" from a
// mistyped command: it has a dot or a slash, as a YAML path does.
func looksLikeFile(arg string) bool {
	return strings.ContainsAny(arg, "./")
}

// flagHint suggests the flag an unknown one was probably meant to be
// ("--conifg" → --config, "-c" → --config).
func flagHint(err error, fs *pflag.FlagSet) string {
	msg := err.Error()
	var name string
	switch {
	case strings.HasPrefix(msg, "unknown flag: --"):
		name = strings.TrimPrefix(msg, "unknown flag: --")
	case strings.HasPrefix(msg, "unknown shorthand flag: "):
		if strings.HasPrefix(msg, "unknown shorthand flag: 'c'") {
			return " (did you mean --config?)"
		}
		return ""
	default:
		return ""
	}
	best, bestD := "", 3 // at most 2 edits away
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean --%s?)", best)
}

// editDistance is the Levenshtein distance of a and b, with a swap of two
// neighbours counted as one edit (conifg → config).
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
