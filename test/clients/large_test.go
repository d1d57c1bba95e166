package clients

import (
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/test/pgcluster"
)

// TestPsqlLargeMessages: messages far larger than any relay buffer in both
// directions, through both listeners: a 4 MiB Query (psql reads the
// statement from stdin) and a 4 MiB DataRow, then both in one statement.
func TestPsqlLargeMessages(t *testing.T) {
	pgcluster.Require(t, cluster)
	needTool(t, psqlBin)
	p := startProxy(t)
	const size = 4 << 20
	lit := strings.Repeat("y", size)
	cases := []struct{ name, sql, want string }{
		{"large Query", "SELECT length('" + lit + "'), md5('" + lit + "') = md5(repeat('y', 4194304));\n", "4194304|t"},
		{"large DataRow", "SELECT length(r), r = repeat('z', 4194304) FROM (SELECT repeat('z', 4194304) AS r) s;\n", "4194304|t"},
		{"large DataRow to the client", "SELECT repeat('z', 4194304);\n", strings.Repeat("z", size)},
		{"large Query and DataRow", "SELECT '" + lit + "';\n", lit},
	}
	for _, l := range []struct{ name, addr string }{{"write", p.WriteAddr()}, {"read", p.ReadAddr()}} {
		for _, c := range cases {
			t.Run(l.name+" "+c.name, func(t *testing.T) {
				r := psql(ctxT(t, 20*time.Second), pgEnv(l.addr, "postgres", "postgres"), c.sql, "-f", "-")
				got := strings.TrimSpace(r.stdout)
				if r.err != nil || got != c.want {
					if len(got) > 100 {
						got = got[:100] + "..."
					}
					r.stdout = got
					t.Fatalf("want %d bytes %.20q...\n%s", len(c.want), c.want, r)
				}
			})
		}
	}
}
