package pgauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseUserlist(t *testing.T) {
	v := rfcVerifier(t)
	file := "\uFEFF; PgBouncer auth_file\r\n" +
		"# another comment\n" +
		"\n" +
		"   \t\n" +
		`"alice" "` + v + `"` + "\r\n" +
		`  "bob"	"md520c46e3762c864548e296b33c3406aa9" "trailing field" ignored` + "\n" +
		`"o""brien" "zq""x9"` + "\n" +
		`"dup" "md520c46e3762c864548e296b33c3406aa9"` + "\n" +
		`"dup" "` + v + `"` + "\n"
	ul, warnings, err := ParseUserlist(strings.NewReader(file), "userlist.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(ul) != 4 {
		t.Fatalf("users: %v", ul)
	}
	if ul["alice"].Kind != KindSCRAM || ul["bob"].Kind != KindMD5 || ul["dup"].Kind != KindSCRAM {
		t.Fatalf("kinds: %v", ul)
	}
	ob := ul[`o"brien`]
	if ob.Kind != KindPlain || ob.Plain != `zq"x9` || !ob.hasSCRAM() {
		t.Fatalf(`o"brien: %v %q (derived verifier: %v)`, ob, ob.Plain, ob.hasSCRAM())
	}
	want := []string{
		`userlist.txt:7: user "o\"brien" has a plaintext password`,
		`userlist.txt:9: user "dup" is also on line 8: line 9 wins`,
	}
	if len(warnings) != len(want) {
		t.Fatalf("warnings: %q", warnings)
	}
	for i, w := range want {
		if !strings.HasPrefix(warnings[i], w) {
			t.Errorf("warning %d = %q, want %q…", i, warnings[i], w)
		}
		if strings.Contains(warnings[i], "x9") {
			t.Errorf("warning %q shows the password", warnings[i])
		}
	}
}

func TestParseUserlistErrors(t *testing.T) {
	v := rfcVerifier(t)
	const secret = "s3cr3t-Value"
	for _, tc := range []struct {
		line string
		want string
	}{
		{`"alice "` + secret, `userlist.txt:2: expected whitespace and a quoted secret`},
		{`"alice" "` + secret, `userlist.txt:2: secret: unterminated quote`},
		{`"alice "" ` + secret + `"`, `userlist.txt:2: missing secret`},
		{`"alice`, `userlist.txt:2: user name: unterminated quote`},
		{`"alice"`, `userlist.txt:2: missing secret`},
		{`"alice"   `, `userlist.txt:2: missing secret`},
		{`"alice" ""`, `userlist.txt:2: user "alice": empty secret`},
		{`"" "` + secret + `"`, `userlist.txt:2: empty user name`},
		{`alice "` + secret + `"`, `userlist.txt:2: expected a quoted user name`},
		{`"alice"` + secret + `"`, `userlist.txt:2: expected whitespace and a quoted secret`},
		{`"alice" "SCRAM-SHA-256$4096:` + secret + `"`, `userlist.txt:2: user "alice": bad SCRAM-SHA-256 secret: no '$'`},
		{`"alice" "` + strings.Replace(v, rfcSalt, secret, 1) + `"`, `userlist.txt:2: user "alice": bad SCRAM-SHA-256 secret: salt is not base64`},
		{`"alice" "` + v[:len(v)-8] + `"`, `userlist.txt:2: user "alice": bad SCRAM-SHA-256 secret: ServerKey`},
		{`"alice" "md5abcdef0123456789abcdef01234567890"`, `userlist.txt:2: user "alice": bad md5 secret: want "md5" and 32 hex digits, have 33`},
		{`"alice" "md5abcdef0123456789abcdef01234"`, `userlist.txt:2: user "alice": bad md5 secret`},
	} {
		file := "; header\n" + tc.line + "\n" + `"bob" "md520c46e3762c864548e296b33c3406aa9"` + "\n"
		ul, _, err := ParseUserlist(strings.NewReader(file), "userlist.txt")
		if err == nil {
			t.Errorf("%s: accepted: %v", tc.line, ul)
			continue
		}
		if !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s:\n got %q\nwant %q…", tc.line, err, tc.want)
		}
		for _, leak := range []string{secret, "3cr3t", v[20:40], "abcdef0123"} {
			if strings.Contains(err.Error(), leak) {
				t.Errorf("%s: error %q shows the secret", tc.line, err)
			}
		}
	}
	long := `"alice" "` + strings.Repeat("x", maxUserlistLine) + `"`
	if _, _, err := ParseUserlist(strings.NewReader("\n"+long), "u.txt"); err == nil || !strings.HasPrefix(err.Error(), "u.txt:2: line longer") {
		t.Errorf("long line: %v", err)
	}
}

func TestLoadUserlist(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(path, []byte(`"alice" "md520c46e3762c864548e296b33c3406aa9"`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	ul, warnings, err := LoadUserlist(path)
	if err != nil || ul["alice"].Kind != KindMD5 {
		t.Fatalf("%v %v", ul, err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "readable by every user") {
		t.Fatalf("warnings: %q", warnings)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, warnings, _ = LoadUserlist(path); len(warnings) != 0 {
		t.Fatalf("warnings for mode 0600: %q", warnings)
	}
	if _, _, err := LoadUserlist(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing file: %v", err)
	}
}
