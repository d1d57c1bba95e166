package configs

import (
	"os"
	"reflect"
	"testing"
)

// FuzzLoad feeds arbitrary bytes as the config file. Load must never
// panic, and whatever it accepts must be valid and survive a YAML round
// trip unchanged.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"pgproxy.yaml", "testdata/full.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"",
		minimal,
		minimal + "backend_tls: require\n",
		minimal + "backend_tls: {mode: verify-full, ca: /x}\n",
		minimal + "routing:\n  rules:\n    - match: {database: \"*_ro\"}\n      route: read\n      strip_suffix: _ro\n",
		"backends: [{addr: \"[::1]:1\"}]\nlisten: [{addr: \":0\"}, {addr: \":0\"}]\n",
		"backends:\n  - &b {addr: h:1}\n  - *b\n",
		"a: &a [*a]\n",
		"backends: [\n",
		"- 1\n",
		"backends: {addr: x}\n",
		minimal + "health: {interval: 0}\n",
		minimal + "---\n---\n",
		"%YAML 1.2\n---\n" + minimal,
		minimal + "health: {user: !!binary aGVsbG8=}\n",
		minimal + "limits: {max_sessions: 0x10}\n",
		minimal + "auth: {mode: proxy, user: u}\npool: {mode: transaction, reset_query: ''}\n",
		minimal + "pool: {size: 20}\n",
		minimal + "routing: {unit: transaction, consistency: global}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := load(data, LoadOptions{Path: "fuzz.yaml"})
		if err != nil {
			if c != nil {
				t.Fatal("Config returned with an error")
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted an invalid config: %v", err)
		}
		out, err := c.YAML()
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		again, err := load(out, LoadOptions{Path: "again.yaml"})
		if err != nil {
			t.Fatalf("YAML output does not load: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("round trip differs:\n was %+v\n now %+v", c, again)
		}
	})
}

// FuzzReplicaDSN: the seed DSN parser never panics and only yields valid
// backend addresses.
func FuzzReplicaDSN(f *testing.F) {
	for _, s := range []string{
		"postgres://u:p@h:5432/db",
		"postgresql://u@[::1]:1/db?sslmode=disable",
		"host=h port=1 user=u password='a b\\' c'",
		"host=h,host=i",
		"postgres://u:p@h:x/db",
		"user=",
		"=x",
		"host='unterminated",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p := &problems{}
		seeds := parseReplicaDSNs(s, p)
		for _, d := range seeds {
			if err := checkAddr(d.addr, false); err != nil {
				t.Fatalf("parsed addr %q is invalid: %v", d.addr, err)
			}
		}
	})
}
