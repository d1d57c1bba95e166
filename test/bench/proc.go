package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// procCPU is a process's user+system CPU time from /proc/PID/stat (all its
// threads; not its children).
func procCPU(pid int, tick time.Duration) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	return parseStatCPU(b, tick)
}

// procTreeCPU is the CPU time of a process and its children: its own
// utime+stime, the cutime+cstime of the children it has waited for, and the
// utime+stime of its live children. For a postmaster that is every
// backend, whether it exited during the run (pgbench through pgproxy) or
// stays connected (PgBouncer's pooled server connections).
func procTreeCPU(pid int, tick time.Duration) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu of %d: %w", pid, err)
	}
	f, err := statFields(b, 15)
	if err != nil {
		return 0, err
	}
	sum, err := sumFields(f[11:15]) // utime stime cutime cstime (fields 14-17)
	if err != nil {
		return 0, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	ppid := strconv.Itoa(pid)
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile: its time is in the parent's cutime now (or soon)
		}
		f, err := statFields(b, 13)
		if err != nil || f[1] != ppid { // f[1] is field 4, ppid
			continue
		}
		n, err := sumFields(f[11:13])
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return time.Duration(sum) * tick, nil
}

// statFields splits a /proc/PID/stat line after the command name: f[0] is
// field 3 (state), so field n is f[n-3].
func statFields(b []byte, min int) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < min {
		return nil, fmt.Errorf("stat: %d fields after the command name, want >= %d", len(f), min)
	}
	return f, nil
}

func sumFields(f []string) (int64, error) {
	var sum int64
	for _, v := range f {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %q: not an integer", v)
		}
		sum += n
	}
	return sum, nil
}

// parseStatCPU reads utime (field 14) and stime (field 15) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// itself contain spaces and parentheses, so fields are counted after the
// last ')'.
func parseStatCPU(b []byte, tick time.Duration) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want >= 13", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q stime %q: not integers", f[11], f[12])
	}
	return time.Duration(ut+st) * tick, nil
}

// procRSS is VmRSS of /proc/PID/status in KiB.
func procRSS(pid int) (int64, error) { return procStatusKiB(pid, "VmRSS") }

// procPeakRSS is VmHWM (the highest RSS since the process started) in KiB.
func procPeakRSS(pid int) (int64, error) { return procStatusKiB(pid, "VmHWM") }

func procStatusKiB(pid int, key string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("%s of %d: %w", key, pid, err)
	}
	return parseStatusKiB(b, key)
}

func parseStatusRSS(b []byte) (int64, error) { return parseStatusKiB(b, "VmRSS") }

// parseStatusKiB reads the "key: N kB" line of /proc/PID/status.
func parseStatusKiB(b []byte, key string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), key+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("status: %s line %q", key, sc.Text())
		}
		return strconv.ParseInt(f[0], 10, 64)
	}
	return 0, fmt.Errorf("status: no %s line", key)
}

// procComm is /proc/PID/comm without the newline.
func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// clockTick is 1/sysconf(_SC_CLK_TCK), the unit of utime and stime.
func clockTick() time.Duration {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if hz, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && hz > 0 {
			return time.Second / time.Duration(hz)
		}
	}
	return 10 * time.Millisecond // USER_HZ is 100 on every Linux architecture Go supports
}

// procSwitches is the sum of voluntary and involuntary context switches of
// every thread of pid (/proc/PID/task/*/status; /proc/PID/status counts the
// main thread only). A thread that exits between two readings takes its
// count with it, so deltas are lower bounds.
func procSwitches(pid int) (int64, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, fmt.Errorf("threads of %d: %w", pid, err)
	}
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue // the thread exited
		}
		n, err := parseStatusSwitches(b)
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

func parseStatusSwitches(b []byte) (int64, error) {
	var sum int64
	found := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "voluntary_ctxt_switches" && k != "nonvoluntary_ctxt_switches") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: %s: %w", k, err)
		}
		sum += n
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("status: context switch lines missing")
	}
	return sum, nil
}

// machineSwitches is the machine's context switches since boot (the
// "ctxt" line of /proc/stat).
func machineSwitches() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineSwitches(b)
}

func parseMachineSwitches(b []byte) (int64, error) {
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ctxt "); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/stat: no ctxt line")
}

// machineCPU is the busy time of all CPUs (user, nice, system, irq,
// softirq, steal: everything but idle and iowait) from the "cpu" line of
// /proc/stat.
func machineCPU(tick time.Duration) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseMachineCPU(b, tick)
}

func parseMachineCPU(b []byte, tick time.Duration) (time.Duration, error) {
	line, _, _ := bytes.Cut(b, []byte{'\n'})
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: first line %q is not the cpu total", line)
	}
	var busy int64
	for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: field %d %q: not an integer", i+1, v)
		}
		if i != 3 && i != 4 {
			busy += n
		}
	}
	return time.Duration(busy) * tick, nil
}
