package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Result is what one pgbench run reported.
type Result struct {
	TPS       float64       // "tps = X (without initial connection time)" or "(including reconnection times)"
	LatencyMS float64       // "latency average = X ms"
	Processed int64         // "number of transactions actually processed: N"
	Failed    int64         // "number of failed transactions: N (...)"; 0 when pgbench does not print it
	Aborted   bool          // pgbench exited non-zero (a client aborted: errors are not retried)
	ClientCPU time.Duration // pgbench's own user+system CPU (rusage); 0 when unknown
	ConnectMS float64       // "initial connection time = X ms"; 0 when absent (-C)
	// AbortedClients counts pgbench's "client N aborted ..." lines (stderr):
	// a client that got an error (not retried) or lost its connection.
	AbortedClients int
	// Progress are the -P lines (stderr), also of a run that never printed
	// its summary.
	Progress []Progress
}

// Progress is one `progress: 5.0 s, 18222.3 tps, lat 10.2 ms stddev 2.1, 0 failed` line.
type Progress struct {
	At, TPS float64
}

// parseProgress reads pgbench's -P lines; others are skipped.
func parseProgress(out []byte) []Progress {
	var ps []Progress
	for _, l := range strings.Split(string(out), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(l), "progress: ")
		if !ok {
			continue
		}
		at, rest, ok1 := strings.Cut(rest, " s, ")
		tps, _, ok2 := strings.Cut(rest, " tps")
		a, err1 := strconv.ParseFloat(at, 64)
		t, err2 := strconv.ParseFloat(tps, 64)
		if ok1 && ok2 && err1 == nil && err2 == nil {
			ps = append(ps, Progress{At: a, TPS: t})
		}
	}
	return ps
}

// parsePgbench reads the summary pgbench 15 prints on stdout. It fails when
// the tps, latency or processed-count line is missing.
func parsePgbench(out []byte) (Result, error) {
	var r Result
	var haveTPS, haveLat, haveN bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "tps = "):
			v, err := firstFloat(strings.TrimPrefix(line, "tps = "))
			if err != nil {
				return r, fmt.Errorf("pgbench: tps line %q: %w", line, err)
			}
			r.TPS, haveTPS = v, true
		case strings.HasPrefix(line, "latency average = "):
			rest := strings.TrimPrefix(line, "latency average = ")
			v, err := firstFloat(rest)
			if err != nil {
				return r, fmt.Errorf("pgbench: latency line %q: %w", line, err)
			}
			if !strings.HasSuffix(rest, " ms") {
				return r, fmt.Errorf("pgbench: latency line %q: unit is not ms", line)
			}
			r.LatencyMS, haveLat = v, true
		case strings.HasPrefix(line, "number of transactions actually processed: "):
			rest := strings.TrimPrefix(line, "number of transactions actually processed: ")
			rest, _, _ = strings.Cut(rest, "/") // "-t" runs print "N/M"
			v, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return r, fmt.Errorf("pgbench: processed line %q: %w", line, err)
			}
			r.Processed, haveN = v, true
		case strings.HasPrefix(line, "number of failed transactions: "):
			rest := strings.TrimPrefix(line, "number of failed transactions: ")
			f, _, _ := strings.Cut(rest, " ")
			v, err := strconv.ParseInt(f, 10, 64)
			if err != nil {
				return r, fmt.Errorf("pgbench: failed line %q: %w", line, err)
			}
			r.Failed = v
		case strings.HasPrefix(line, "initial connection time = "):
			v, err := firstFloat(strings.TrimPrefix(line, "initial connection time = "))
			if err != nil {
				return r, fmt.Errorf("pgbench: connection time line %q: %w", line, err)
			}
			r.ConnectMS = v
		}
	}
	var missing []string
	if !haveTPS {
		missing = append(missing, "tps")
	}
	if !haveLat {
		missing = append(missing, "latency average")
	}
	if !haveN {
		missing = append(missing, "transactions processed")
	}
	if len(missing) > 0 {
		return r, fmt.Errorf("pgbench: output lacks %s", strings.Join(missing, ", "))
	}
	return r, nil
}

// firstFloat parses the leading number of s ("123.4 (without ...)").
func firstFloat(s string) (float64, error) {
	f, _, _ := strings.Cut(strings.TrimSpace(s), " ")
	return strconv.ParseFloat(f, 64)
}

// abortedRE matches pgbench's lines about an aborted client ("client 7
// aborted in command 1 (SQL) of script 0; ...", "client 7 script 0 aborted
// in command 1 query 0: ERROR: ...", "client 3 aborted while establishing
// connection").
var abortedRE = regexp.MustCompile(`\bclient (\d+) (?:script \d+ )?aborted\b`)

// countAborted counts the distinct clients pgbench reports as aborted (one
// client may be named on more than one line).
func countAborted(stderr []byte) int {
	seen := map[string]bool{}
	for _, m := range abortedRE.FindAllSubmatch(stderr, -1) {
		seen[string(m[1])] = true
	}
	return len(seen)
}

// Case is one pgbench configuration of the matrix.
type Case struct {
	Mode    string // simple | extended | prepared
	Clients int
	Connect bool // -C: a new connection per transaction
	Threads int  // -j; 0: min(Clients, 2)
	// MD5 (pooled cases): log in as the md5 role instead of the target's
	// SCRAM one (a cheap login for the client, so -C measures the relays).
	MD5 bool
	// Script (masking cases): a pgbench script file run with -f instead of
	// the built-in -S.
	Script string
}

// Name is how the case appears in the table ("-M simple -c 16 -C").
func (c Case) Name() string {
	s := fmt.Sprintf("-M %s -c %d", c.Mode, c.Clients)
	if c.Connect {
		s += " -C"
	}
	if c.MD5 {
		s += " (md5)"
	}
	return s
}

// Args are pgbench's arguments for the case against 127.0.0.1:port as user.
func (c Case) Args(port int, user, db string, d time.Duration) []string {
	threads := min(c.Clients, 2)
	if c.Threads > 0 {
		threads = c.Threads
	}
	secs := int(d.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	script := []string{"-S"}
	if c.Script != "" {
		script = []string{"-f", c.Script}
	}
	args := append([]string{"-n"}, script...)
	args = append(args,
		"-M", c.Mode,
		"-c", strconv.Itoa(c.Clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(secs),
	)
	if c.Connect {
		args = append(args, "-C")
	}
	return append(args, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", user, db)
}

// runPgbench runs pgbench and parses its summary. A non-zero exit with a
// parsable summary is a run with aborted clients (reported, not fatal).
func runPgbench(ctx context.Context, bin string, args []string, env []string) (Result, []byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()
	r, perr := parsePgbench(stdout.Bytes())
	if ps := cmd.ProcessState; ps != nil {
		r.ClientCPU = ps.UserTime() + ps.SystemTime()
	}
	r.AbortedClients = countAborted(stderr.Bytes())
	r.Progress = parseProgress(stderr.Bytes())
	all := append(stdout.Bytes(), stderr.Bytes()...)
	if ctx.Err() != nil {
		return r, all, ctx.Err()
	}
	if perr != nil {
		return r, all, errors.Join(perr, runErr)
	}
	if runErr != nil {
		r.Aborted = true
	}
	return r, all, nil
}
