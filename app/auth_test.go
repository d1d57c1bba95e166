package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/configs"
)

// TestAuthFileErrorsAndReload: a malformed auth.file refuses the start
// naming file and line; a reload with a malformed file is refused and the
// users in force stay; a good reload is seen by the next login.
func TestAuthFileErrorsAndReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "userlist.txt")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := configs.Default()
	cfg.Listen = []configs.Listener{{Addr: "127.0.0.1:0"}}
	cfg.Backends = []configs.Backend{{Addr: "127.0.0.1:1"}}
	cfg.HTTP.Addr = ""
	cfg.Auth.Mode = configs.AuthProxy
	cfg.Auth.File = path

	write("\"alice\" \"md5" + strings.Repeat("a", 32) + "\"\n\"bob\n")
	if _, err := New(cfg, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), path+":2") {
		t.Fatalf("start with a malformed auth.file: %v, want an error naming %s:2", err, path)
	}

	write("\"alice\" \"md5" + strings.Repeat("a", 32) + "\"\n")
	a, err := New(cfg, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.closeListeners()
	if _, found, _ := a.auth.lookup(t.Context(), "alice"); !found {
		t.Fatal("alice not found")
	}
	write("\"carol\" \"md5" + strings.Repeat("b", 32) + "\"\n\"broken")
	if _, err := a.Reload(cfg); err == nil || !strings.Contains(err.Error(), path+":2") {
		t.Fatalf("reload with a malformed auth.file: %v", err)
	}
	if _, found, _ := a.auth.lookup(t.Context(), "alice"); !found {
		t.Fatal("a refused reload dropped the users in force")
	}
	write("\"carol\" \"md5" + strings.Repeat("b", 32) + "\"\n")
	if _, err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := a.auth.lookup(t.Context(), "carol"); !found {
		t.Fatal("carol not seen after RELOAD")
	}
	if _, found, _ := a.auth.lookup(t.Context(), "alice"); found {
		t.Fatal("alice still known after RELOAD removed her")
	}
}
