package masking_test

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ofitec/pgproxy/test/pgtest"
)

// writeSyscalls is this process's write system calls so far (the proxy
// runs in it: proxytest).
func writeSyscalls(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/io")
	if err != nil {
		t.Skipf("no /proc/self/io: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("syscw: ")); ok {
			n, err := strconv.Atoi(string(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no syscw in /proc/self/io")
	return 0
}

// TestMaskedResultOneWrite: a masked result of a few KiB (more than the
// relay's small read buffer, less than one PostgreSQL send) reaches the
// client in one write, in pass-through and in both pool modes: the masked
// session's server side reads into the large buffer from the first read.
// Per statement the process writes once for the client's Query, once to
// the server and once to the client; with the small buffer first, twice to
// the client.
func TestMaskedResultOneWrite(t *testing.T) {
	setup(t)
	eachMode(t, func(t *testing.T, mode string) {
		{
			p := startMasked(t, mode)
			conn, rec := connectRecorded(t, p)
			ctx := pgtest.Ctx(t, 30*time.Second)
			const q = "SELECT id, email, vat, repeat(name, 10) FROM res_partner, generate_series(1, 20) ORDER BY 1"
			run := func() int {
				n := 0
				rows, err := conn.Query(ctx, q, pgx.QueryExecModeSimpleProtocol)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					n++
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := run(); n != 60 { // warm: the catalog lookups
				t.Fatalf("%d rows, want 60", n)
			}
			size := len(rec.bytes())
			run()
			if size = len(rec.bytes()) - size; size <= 4<<10 || size >= 8<<10 {
				t.Fatalf("a result of %d bytes: the test wants one between 4 and 8 KiB", size)
			}
			if bytes.Contains(rec.bytes(), []byte(emails[0])) {
				t.Fatal("a clear email reached the client")
			}
			const n = 40
			before := writeSyscalls(t)
			for i := 0; i < n; i++ {
				run()
			}
			writes := writeSyscalls(t) - before
			t.Logf("%d write system calls for %d statements", writes, n)
			if writes > n*3+n/4 {
				t.Fatalf("%d write system calls for %d statements of a %d-byte masked result, want about %d (one write per result to the client)", writes, n, size, 3*n)
			}
		}
	})
}
