package app

import (
	"context"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"go.uber.org/zap"

	"github.com/ofitec/pgproxy/configs"
	"github.com/ofitec/pgproxy/internal/pgauth"
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

// scramSalt asks the proxy at addr for user's SCRAM salt: the startup
// message, then a client-first-message; the server-first-message says.
func scramSalt(t *testing.T, addr, user string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(c, c)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": user, "database": "postgres"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	if sasl, ok := m.(*pgproto3.AuthenticationSASL); err != nil || !ok || !slices.Contains(sasl.AuthMechanisms, "SCRAM-SHA-256") {
		t.Fatalf("%s: %T %v, want AuthenticationSASL", user, m, err)
	}
	fe.Send(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,,n=,r=clientnonce")})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err = fe.Receive()
	cont, ok := m.(*pgproto3.AuthenticationSASLContinue)
	if err != nil || !ok {
		t.Fatalf("%s: %T %v, want AuthenticationSASLContinue", user, m, err)
	}
	for _, attr := range strings.Split(string(cont.Data), ",") {
		if strings.HasPrefix(attr, "s=") {
			return attr[2:]
		}
	}
	t.Fatalf("%s: no salt in %q", user, cont.Data)
	return ""
}

// TestMockSaltStableAcrossRestarts: an unknown user's fake SCRAM salt is
// the same from one pgproxy to the next given the same auth.file (two
// instances, or a restart), as a real user's is: salts do not tell them
// apart.
func TestMockSaltStableAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "userlist.txt")
	verifier := pgauth.SCRAMVerifier("pw", []byte("0123456789abcdef"), 4096)
	if err := os.WriteFile(path, []byte(`"alice" "`+verifier+`"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := configs.Default()
	cfg.Listen = []configs.Listener{{Addr: "127.0.0.1:0"}}
	cfg.Backends = []configs.Backend{{Addr: "127.0.0.1:1"}}
	cfg.HTTP.Addr = ""
	cfg.Auth.Mode = configs.AuthProxy
	cfg.Auth.File = path
	salts := func() (real, ghost string) {
		a, err := New(cfg, zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		addr := a.ListenAddrs()[0]
		return scramSalt(t, addr, "alice"), scramSalt(t, addr, "ghost")
	}
	real1, ghost1 := salts()
	real2, ghost2 := salts()
	if real1 != base64.StdEncoding.EncodeToString([]byte("0123456789abcdef")) || real1 != real2 {
		t.Fatalf("real user's salt: %q then %q", real1, real2)
	}
	if ghost1 != ghost2 {
		t.Fatalf("unknown user's salt changed across restarts: %q then %q", ghost1, ghost2)
	}
	if ghost1 == real1 || len(ghost1) != len(real1) {
		t.Fatalf("unknown user's salt %q, real user's %q", ghost1, real1)
	}
}
