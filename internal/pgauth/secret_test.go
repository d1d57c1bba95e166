package pgauth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// A verifier as PostgreSQL 15 stores it for password "pencil"
// (SELECT rolpassword FROM pg_authid): computed by SCRAMVerifier over the
// RFC 7677 salt, the keys checked against the RFC's exchange above.
func rfcVerifier(t testing.TB) string {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	return SCRAMVerifier("pencil", salt, 4096)
}

func TestParseSecret(t *testing.T) {
	v := rfcVerifier(t)
	keys := v[strings.Index(v, "$")+1:]
	for _, tc := range []struct {
		in      string
		kind    Kind
		wantErr string
	}{
		{in: v, kind: KindSCRAM},
		{in: "md520c46e3762c864548e296b33c3406aa9", kind: KindMD5},
		{in: "md520C46E3762C864548E296B33C3406AA9", kind: KindMD5},
		{in: "pencil", kind: KindPlain},
		{in: "md5sum", kind: KindPlain},        // a password that starts with md5
		{in: "scram-sha-256", kind: KindPlain}, // only the exact prefix is a verifier
		{in: "", wantErr: "empty secret"},
		{in: "md520c46e3762c864548e296b33c3406aa", wantErr: "bad md5 secret"},   // 31 hex digits
		{in: "md520c46e3762c864548e296b33c3406aa9f", wantErr: "bad md5 secret"}, // 33
		{in: "SCRAM-SHA-256$4096:" + rfcSalt, wantErr: "no '$' between"},
		{in: "SCRAM-SHA-256$4096" + "$" + strings.SplitN(keys, "$", 2)[1], wantErr: "no ':' between the iterations"},
		{in: "SCRAM-SHA-256$x:" + strings.SplitN(keys, ":", 2)[1], wantErr: "iterations"},
		{in: "SCRAM-SHA-256$0:" + strings.SplitN(keys, ":", 2)[1], wantErr: "iterations"},
		{in: "SCRAM-SHA-256$-1:" + strings.SplitN(keys, ":", 2)[1], wantErr: "iterations"},
		{in: strings.Replace(v, rfcSalt, "not base64!", 1), wantErr: "salt"},
		{in: v[:len(v)-4], wantErr: "ServerKey"},
		{in: "SCRAM-SHA-256$4096:" + rfcSalt + "$AAAA:" + strings.SplitN(keys, ":", 3)[2], wantErr: "StoredKey"},
		{in: v[:strings.LastIndex(v, ":")], wantErr: "no ':' between StoredKey"},
	} {
		sec, err := ParseSecret(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseSecret(%q) = %v, %v; want error containing %q", tc.in, sec, err, tc.wantErr)
				continue
			}
			if len(tc.in) > 8 && strings.Contains(err.Error(), tc.in[8:]) {
				t.Errorf("ParseSecret error %q repeats the secret", err)
			}
			continue
		}
		if err != nil || sec.Kind != tc.kind {
			t.Errorf("ParseSecret(%q) = %v, %v; want kind %v", tc.in, sec, err, tc.kind)
		}
	}
	sec, _ := ParseSecret("md520C46E3762C864548E296B33C3406AA9")
	if sec.MD5 != "md520c46e3762c864548e296b33c3406aa9" {
		t.Errorf("md5 hex not lowercased: %q", sec.MD5)
	}
	sec, _ = ParseSecret(v)
	wantSalt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	_, stored, server := scramKeys("pencil", wantSalt, 4096)
	if sec.Iterations != 4096 || !bytes.Equal(sec.Salt, wantSalt) || !bytes.Equal(sec.StoredKey, stored) || !bytes.Equal(sec.ServerKey, server) {
		t.Errorf("SCRAM fields wrong: %d %x %x %x", sec.Iterations, sec.Salt, sec.StoredKey, sec.ServerKey)
	}
}

func TestSecretPrintsNoKeyMaterial(t *testing.T) {
	scram, _ := ParseSecret(rfcVerifier(t))
	plain := Secret{Kind: KindPlain, Plain: "pencil"}.withDerivedSCRAM("user")
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9")
	for want, sec := range map[string]Secret{"SCRAM-SHA-256 (4096 iterations)": scram, "plaintext": plain, "md5": md5sec, "none": {}} {
		cred := Credential{User: "user", Secret: sec, ClientKey: bytes.Repeat([]byte{0xAB}, 32)}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
			for _, v := range []any{sec, cred, &cred} {
				out := fmt.Sprintf(verb, v)
				if !strings.Contains(out, want) {
					t.Errorf("%s of %T = %q, want it to say %q", verb, v, out, want)
				}
				for _, leak := range []string{"pencil", "20c46e37", "abab", "q6ur", "171, 171"} {
					if strings.Contains(strings.ToLower(out), strings.ToLower(leak)) {
						t.Errorf("%s of %T = %q shows key material", verb, v, out)
					}
				}
				for _, k := range [][]byte{sec.Salt, sec.StoredKey, sec.ServerKey} {
					if len(k) > 0 && (strings.Contains(out, base64.StdEncoding.EncodeToString(k)[:8]) || strings.Contains(out, fmt.Sprintf("%x", k)[:8])) {
						t.Errorf("%s of %T = %q shows key material", verb, v, out)
					}
				}
			}
		}
	}
}

func TestMD5(t *testing.T) {
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9") // "pencil" for "user"
	salt := [4]byte{1, 2, 3, 4}
	good := []byte("md54376eb6913b38f9aaff38dc7cf19ca76\x00")
	for name, sec := range map[string]Secret{"md5": md5sec, "plaintext": {Kind: KindPlain, Plain: "pencil"}} {
		c, err := VerifyMD5("user", sec, salt, good)
		if err != nil || !c.CanLogin() || c.User != "user" {
			t.Errorf("%s: right response: %v, %v", name, c, err)
		}
		_, err = VerifyMD5("user", sec, salt, []byte("md54376eb6913b38f9aaff38dc7cf19ca77\x00"))
		if !errors.Is(err, ErrPasswordMismatch) {
			t.Errorf("%s: wrong response: %v", name, err)
		}
		_, err = VerifyMD5("user", sec, [4]byte{1, 2, 3, 5}, good)
		if !errors.Is(err, ErrPasswordMismatch) {
			t.Errorf("%s: replayed response for another salt: %v", name, err)
		}
		_, err = VerifyMD5("user2", sec, salt, good)
		if name == "plaintext" && !errors.Is(err, ErrPasswordMismatch) {
			t.Errorf("%s: response for another user: %v", name, err)
		}
	}
	scram, _ := ParseSecret(rfcVerifier(t))
	_, err := VerifyMD5("user", scram, salt, good)
	if !errors.Is(err, ErrPasswordMismatch) || !strings.Contains(err.Error(), "cannot verify md5") {
		t.Errorf("SCRAM secret: %v", err)
	}
	var pe *pgerr.Error
	for _, bad := range [][]byte{[]byte("md54376eb6913b38f9aaff38dc7cf19ca76"), []byte("md5\x00x")} {
		if _, err := VerifyMD5("user", md5sec, salt, bad); !errors.As(err, &pe) || pe.Code != "08P01" {
			t.Errorf("malformed %q: %v", bad, err)
		}
	}
	if MD5Challenge() == MD5Challenge() {
		t.Error("MD5Challenge repeats (1 in 2^32)")
	}
}

func TestCredentialCanLogin(t *testing.T) {
	scram, _ := ParseSecret(rfcVerifier(t))
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9")
	for _, tc := range []struct {
		c    Credential
		want bool
	}{
		{Credential{Secret: scram, ClientKey: make([]byte, 32)}, true},
		{Credential{Secret: scram}, false},
		{Credential{Secret: md5sec}, true},
		{Credential{Secret: Secret{Kind: KindPlain, Plain: "x"}}, true},
		{Credential{}, false},
	} {
		if got := tc.c.CanLogin(); got != tc.want {
			t.Errorf("%v: CanLogin = %v", tc.c, got)
		}
		tc.c.Zero()
		if tc.c.CanLogin() {
			t.Errorf("%v can log in after Zero", tc.c)
		}
	}
}

func TestMockKeyMaterial(t *testing.T) {
	scram, _ := ParseSecret(SCRAMVerifier("pw", []byte("0123456789abcdef"), 4096))
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9")
	if m := UserlistMockMaterial(Userlist{"a": md5sec, "b": {Kind: KindPlain, Plain: "pw"}}); m != nil {
		t.Fatalf("md5 and plaintext secrets (guessable) used as material: %x", m)
	}
	m1 := UserlistMockMaterial(Userlist{"a": md5sec, "s": scram})
	m2 := UserlistMockMaterial(Userlist{"s": scram, "a": md5sec})
	if m1 == nil || !bytes.Equal(MockKey(m1), MockKey(m2)) || len(MockKey(m1)) != 32 {
		t.Fatal("MockKey of the same userlist differs")
	}
	if bytes.Equal(MockKey(m1), MockKey(UserlistMockMaterial(Userlist{"t": scram}))) || MockKey() != nil {
		t.Fatal("MockKey ignores the user names, or makes a key of nothing")
	}
}
