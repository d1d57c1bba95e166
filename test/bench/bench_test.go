package main

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParsePgbench(t *testing.T) {
	tests := []struct {
		file    string
		want    Result
		wantErr string
	}{
		{file: "pgbench-simple.txt", want: Result{TPS: 13327.755859, LatencyMS: 0.150, Processed: 13286, ConnectMS: 4.925}},
		{file: "pgbench-connect.txt", want: Result{TPS: 267.597801, LatencyMS: 7.474, Processed: 268}},
		{file: "pgbench-prepared_t.txt", want: Result{TPS: 21720.243267, LatencyMS: 0.046, Processed: 100, ConnectMS: 2.702}},
		{file: "pgbench-aborted.txt", wantErr: "output lacks tps, latency average"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parsePgbench(b)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParsePgbenchLines(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Result
		wantErr string
	}{
		{
			name: "failed transactions",
			in:   "number of transactions actually processed: 10\nnumber of failed transactions: 3 (23.077%)\nlatency average = 1.5 ms\ntps = 7.0 (without initial connection time)\n",
			want: Result{TPS: 7, LatencyMS: 1.5, Processed: 10, Failed: 3},
		},
		{
			name:    "latency in another unit",
			in:      "number of transactions actually processed: 10\nlatency average = 1.5 s\ntps = 7.0 (x)\n",
			wantErr: "unit is not ms",
		},
		{
			name:    "garbage tps",
			in:      "number of transactions actually processed: 10\nlatency average = 1.5 ms\ntps = many (x)\n",
			wantErr: "tps line",
		},
		{name: "empty", in: "", wantErr: "output lacks tps, latency average, transactions processed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePgbench([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	const tick = 10 * time.Millisecond
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr bool
	}{
		{name: "cat", in: "4494 (cat) R 4486 4486 2904 0 -1 4194304 100 0 0 0 7 5 0 0 20 0 1 0 123966 3133440 381", want: 12 * tick},
		{name: "comm with spaces and parens", in: "77 (a) b (c) S 1 77 77 0 -1 4194560 3 0 0 0 300 45 0 0 20 0 9 0 5 1 1", want: 345 * tick},
		{name: "truncated", in: "77 (x) S 1 2 3", wantErr: true},
		{name: "no comm", in: "77 x S 1 2 3 4 5 6 7 8 9 10 11 12 13", wantErr: true},
		{name: "not numbers", in: "77 (x) S 1 77 77 0 -1 0 0 0 0 0 a b 0 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in), tick)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestProcSelf(t *testing.T) {
	pid := os.Getpid()
	if _, err := procCPU(pid, clockTick()); err != nil {
		t.Fatal(err)
	}
	rss, err := procRSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
}

func TestParseStatusSwitches(t *testing.T) {
	got, err := parseStatusSwitches([]byte("Name:\tpgproxy\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n"))
	if err != nil || got != 127 {
		t.Fatalf("got %d, %v", got, err)
	}
	if _, err := parseStatusSwitches([]byte("voluntary_ctxt_switches:\t120\n")); err == nil {
		t.Fatal("one line missing: want an error")
	}
	if n, err := procSwitches(os.Getpid()); err != nil || n <= 0 {
		t.Fatalf("own switches %d, %v", n, err)
	}
}

func TestParseStatusRSS(t *testing.T) {
	got, err := parseStatusRSS([]byte("Name:\tpgproxy\nVmPeak:\t  999 kB\nVmRSS:\t   55536 kB\nThreads: 7\n"))
	if err != nil || got != 55536 {
		t.Fatalf("got %d, %v", got, err)
	}
	if _, err := parseStatusRSS([]byte("Name:\tkthread\n")); err == nil {
		t.Fatal("no VmRSS line: want an error")
	}
	if _, err := parseStatusRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Fatal("unit MB: want an error")
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing must be NaN")
	}
	in := []float64{3, 1, 2}
	median(in)
	if in[0] != 3 {
		t.Error("median sorted its input")
	}
}

func TestSummarize(t *testing.T) {
	ss := []Sample{
		{Result: Result{TPS: 100, LatencyMS: 2, Processed: 1000, Failed: 1}, CPU: time.Second, HasCPU: true},
		{Result: Result{TPS: 300, LatencyMS: 1, Processed: 3000}, CPU: 2 * time.Second, HasCPU: true},
		{Result: Result{TPS: 200, LatencyMS: 3, Processed: 2000, Failed: 2, Aborted: true}, CPU: time.Second, HasCPU: true},
		{Err: os.ErrDeadlineExceeded},
	}
	got := summarize(ss)
	// CPU per 100k: 100, 66.67, 50 → median 66.67.
	if got.N != 3 || got.Errors != 1 || got.Aborted != 1 || got.Failed != 3 || got.TPS != 200 || got.LatencyMS != 2 ||
		math.Abs(got.CPUPer100k-66.6667) > 0.01 {
		t.Fatalf("got %+v", got)
	}
	if d := summarize([]Sample{{Result: Result{TPS: 1, LatencyMS: 1, Processed: 1}}}); !math.IsNaN(d.CPUPer100k) {
		t.Fatalf("direct has no CPU figure, got %v", d.CPUPer100k)
	}
}

func TestCaseArgs(t *testing.T) {
	got := strings.Join(Case{Mode: "prepared", Clients: 64, Connect: true}.Args(5432, "postgres", "postgres", 10*time.Second), " ")
	want := "-n -S -M prepared -c 64 -j 2 -T 10 -C -h 127.0.0.1 -p 5432 -U postgres postgres"
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if got := (Case{Mode: "simple", Clients: 1}).Args(1, "u", "d", 1500*time.Millisecond); strings.Join(got[:8], " ") != "-n -S -M simple -c 1 -j 1" {
		t.Fatalf("-c 1 must use -j 1: %v", got)
	}
}

func sample(tps, lat float64, cpu time.Duration) []Sample {
	// 1.5 context switches per query for a relay.
	return []Sample{{Result: Result{TPS: tps, LatencyMS: lat, Processed: 100000}, CPU: cpu, HasCPU: cpu > 0, Switches: 150000}}
}

func TestTableAndChecks(t *testing.T) {
	cases := []Case{{Mode: "simple", Clients: 1}, {Mode: "simple", Clients: 16}, {Mode: "simple", Clients: 64}, {Mode: "simple", Clients: 1, Connect: true}}
	tb := newTable(cases, []string{Direct, PgBouncer, Pgproxy})
	set := func(c Case, d, b, p []Sample) {
		tb.Samples[c.Name()][Direct], tb.Samples[c.Name()][PgBouncer], tb.Samples[c.Name()][Pgproxy] = d, b, p
	}
	set(cases[0], sample(20000, 0.050, 0), sample(15000, 0.080, time.Second), sample(16000, 0.085, 900*time.Millisecond))
	set(cases[1], sample(50000, 0.3, 0), sample(30000, 0.5, time.Second), sample(33000, 0.45, 2*time.Second))
	set(cases[2], sample(40000, 1.6, 0), sample(30000, 2.1, time.Second), []Sample{{Result: Result{TPS: 1, LatencyMS: 9, Processed: 10, Failed: 4}}})
	set(cases[3], sample(300, 3, 0), sample(1000, 1, time.Second), sample(100, 10, time.Second))

	md := tb.Markdown()
	for _, want := range []string{
		"| `-M simple -c 1` | 20000 | 15000 | 16000 | 0.80× | 1.07× | 0.050 / 0.080 / 0.085 | +35 | 1.00 | 0.90 | 1.50 / 1.50 | 0 / 0 / 0 |",
		"| `-M simple -c 64` | 40000 | 30000 | 1 |",
		"| 0 / 0 / 4 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	idle := &IdleResult{Sessions: 1000, BeforeKiB: 20000, WithKiB: 50000}
	checks := tb.Checks(idle)
	want := map[string]bool{
		"`-S -c16`, every protocol: pgproxy ≥ 1.0× PgBouncer TPS": true,
		"CPU s per 100k queries: pgproxy ≤ PgBouncer":             false, // -c16 uses 2 s vs 1 s
		"`-c1` added latency ≤ 40 µs over direct":                 true,
		"`-c64`: no failed transactions (pgproxy)":                false,
		"`-c64`: pgproxy ≥ 1.0× PgBouncer TPS":                    false, // 1 TPS vs 30000
		"idle session ≤ 32 KiB RSS (pgproxy)":                     true,  // 30 KiB
		"`-C` (new connection per transaction) reported":          true,
	}
	if len(checks) != len(want) {
		t.Fatalf("%d checks, want %d", len(checks), len(want))
	}
	for _, c := range checks {
		w, ok := want[c.Target]
		if !ok || c.OK == nil || *c.OK != w {
			t.Errorf("check %q: got %v (%s), want %v", c.Target, c.OK, c.Result, w)
		}
	}
}

func TestTableWithoutPgbouncer(t *testing.T) {
	c := Case{Mode: "extended", Clients: 16}
	tb := newTable([]Case{c}, []string{Direct, Pgproxy})
	tb.Samples[c.Name()][Direct] = sample(100, 1, 0)
	tb.Samples[c.Name()][Pgproxy] = sample(50, 2, time.Second)
	md := tb.Markdown()
	if !strings.Contains(md, "| `-M extended -c 16` | 100 | – | 50 | 0.50× | – | 1.000 / – / 2.000 | +1000 | – | 1.00 | – / 1.50 | 0 / – / 0 |") {
		t.Fatalf("table:\n%s", md)
	}
	for _, ch := range tb.Checks(nil) {
		if strings.Contains(ch.Target, "PgBouncer") && ch.OK != nil {
			t.Errorf("%q evaluated without PgBouncer", ch.Target)
		}
		if strings.Contains(ch.Target, "idle") && ch.OK != nil {
			t.Errorf("idle evaluated without a measurement")
		}
	}
}

func TestParseFlagsQuick(t *testing.T) {
	o, err := parseFlags([]string{"-quick", "-rounds", "2"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 2*time.Second || o.rounds != 2 || o.scale != 1 {
		t.Fatalf("quick: %+v", o)
	}
	if n := len(o.cases()); n != 3*3+2 {
		t.Fatalf("%d cases, want 11", n)
	}
	if _, err := parseFlags([]string{"-modes", "simple,bogus"}, &strings.Builder{}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if _, err := parseFlags([]string{"-pgproxy-env", "GOMAXPROCS"}, &strings.Builder{}); err == nil {
		t.Fatal("-pgproxy-env without = accepted")
	}
	o, err = parseFlags([]string{"-pgproxy-env", "GOMAXPROCS=1, GOGC=200", "-connect-clients", ""}, &strings.Builder{})
	if err != nil || strings.Join(o.proxyEnv, " ") != "GOMAXPROCS=1 GOGC=200" {
		t.Fatalf("-pgproxy-env: %v %v", o.proxyEnv, err)
	}
	if got := commandLine(o); got != "go run ./test/bench -pgproxy-env 'GOMAXPROCS=1, GOGC=200' -connect-clients ''" {
		t.Fatalf("command line %s", got)
	}
	if _, err := parseFlags([]string{"-clients", "0"}, &strings.Builder{}); err == nil {
		t.Fatal("-c 0 accepted")
	}
}

func TestParseMachineCPU(t *testing.T) {
	stat := "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\nctxt 12345\n"
	got, err := parseMachineCPU([]byte(stat), 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// busy = user 100 + nice 5 + system 50 + irq 3 + softirq 2 + steal 1 = 161 ticks
	if want := 1610 * time.Millisecond; got != want {
		t.Fatalf("busy = %s, want %s", got, want)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 3\n", "cpu 1 2 x 4 5 6 7 8\n"} {
		if _, err := parseMachineCPU([]byte(bad), time.Millisecond); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if _, err := machineCPU(10 * time.Millisecond); err != nil {
		t.Fatalf("this machine's /proc/stat: %v", err)
	}
}

func TestParseStatCounts(t *testing.T) {
	out := []byte("# started on x\n\n147318,,raw_syscalls:sys_enter,950294560,100.00,,\n4120,,syscalls:sys_enter_read,950332067,100.00,,\n<not counted>,,syscalls:sys_enter_futex,0,100.00,,\n")
	m := parseStatCounts(out)
	if m["raw_syscalls:sys_enter"] != 147318 || m["syscalls:sys_enter_read"] != 4120 {
		t.Errorf("counts %v", m)
	}
	if _, ok := m["syscalls:sys_enter_futex"]; ok || len(m) != 2 {
		t.Errorf("a line without a count was taken: %v", m)
	}
}

func TestParseMachineSwitches(t *testing.T) {
	n, err := parseMachineSwitches([]byte("cpu  1 2 3 4 5 6 7 8 0 0\nintr 5 6\nctxt 123456789\nbtime 1\n"))
	if err != nil || n != 123456789 {
		t.Errorf("got %d, %v", n, err)
	}
	if _, err := parseMachineSwitches([]byte("cpu 1 2\n")); err == nil {
		t.Error("no error without a ctxt line")
	}
}
