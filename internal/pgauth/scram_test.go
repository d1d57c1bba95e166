package pgauth

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// RFC 7677 §3: SCRAM-SHA-256, user "user", password "pencil".
const (
	rfcClientNonce = "rOprNGfwEbeRWgbNEkqO"
	rfcServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	rfcSalt        = "W22ZaJ0SNY7soEsUEjb6gQ=="
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
)

func rfcSecret(t testing.TB) Secret {
	t.Helper()
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	sec, err := ParseSecret(SCRAMVerifier("pencil", salt, 4096))
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// initialResponse builds a SASLInitialResponse body.
func initialResponse(mech, data string) []byte {
	b := append([]byte(mech), 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func authBody(code uint32, data string) []byte {
	return append(binary.BigEndian.AppendUint32(nil, code), data...)
}

func TestSCRAMServerRFC7677(t *testing.T) {
	s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
	if got, want := s.Mechanisms(), authBody(10, "SCRAM-SHA-256\x00\x00"); !bytes.Equal(got, want) {
		t.Fatalf("Mechanisms = %q, want %q", got, want)
	}
	cont, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", rfcClientFirst))
	if err != nil {
		t.Fatal(err)
	}
	if want := authBody(11, rfcServerFirst); !bytes.Equal(cont, want) {
		t.Fatalf("server-first = %q, want %q", cont, want)
	}
	if c := s.Credential(); c.CanLogin() {
		t.Fatalf("credential before the proof: %v", c)
	}
	fin, err := s.ClientFinal([]byte(rfcClientFinal))
	if err != nil {
		t.Fatal(err)
	}
	if want := authBody(12, rfcServerFinal); !bytes.Equal(fin, want) {
		t.Fatalf("server-final = %q, want %q", fin, want)
	}
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	clientKey, _, _ := scramKeys("pencil", salt, 4096)
	c := s.Credential()
	if !c.CanLogin() || !bytes.Equal(c.ClientKey, clientKey) || c.Secret.Plain != "" || c.User != "user" {
		t.Fatalf("credential = %v, ClientKey %x, want ClientKey %x", c, c.ClientKey, clientKey)
	}
	// The credential's slices are its own: wiping it leaves the server's
	// secret (shared with a Userlist) alone.
	stored := append([]byte(nil), s.sec.StoredKey...)
	c.Zero()
	if c.CanLogin() || !bytes.Equal(s.sec.StoredKey, stored) {
		t.Fatal("Zero: credential still usable, or it wiped the shared secret")
	}
}

// scriptedBackend is a reader of backend messages for login.
func scriptedBackend(msgs ...[]byte) *bufio.Reader {
	var b []byte
	for _, m := range msgs {
		b = append(b, m...)
	}
	return bufio.NewReader(bytes.NewReader(b))
}

func authMsg(code uint32, data string) []byte {
	return pgwire.AppendMessage(nil, 'R', authBody(code, data))
}

// frontendMessages splits what login wrote.
func frontendMessages(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		typ, body, err := pgwire.ReadMessage(r, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if typ != 'p' {
			t.Fatalf("login wrote message %q", typ)
		}
		out = append(out, body)
	}
	return out
}

func TestLoginRFC7677(t *testing.T) {
	s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
	if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", rfcClientFirst)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientFinal([]byte(rfcClientFinal)); err != nil {
		t.Fatal(err)
	}
	keyCred := s.Credential()
	for name, cred := range map[string]Credential{
		"plaintext":       {User: "user", Secret: Secret{Kind: KindPlain, Plain: "pencil"}},
		"ClientKey only":  keyCred,
		"plain, derived":  {User: "user", Secret: Secret{Kind: KindPlain, Plain: "pencil"}.withDerivedSCRAM("user")},
		"SCRAM, no plain": {User: "user", Secret: keyCred.Secret, ClientKey: keyCred.ClientKey},
	} {
		t.Run(name, func(t *testing.T) {
			br := scriptedBackend(
				authMsg(10, "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"),
				authMsg(11, rfcServerFirst),
				authMsg(12, rfcServerFinal),
				authMsg(0, ""),
			)
			var w bytes.Buffer
			if err := login(&w, br, &cred, rfcClientNonce, "user"); err != nil {
				t.Fatal(err)
			}
			msgs := frontendMessages(t, w.Bytes())
			if len(msgs) != 2 {
				t.Fatalf("login wrote %d messages", len(msgs))
			}
			if want := initialResponse("SCRAM-SHA-256", rfcClientFirst); !bytes.Equal(msgs[0], want) {
				t.Fatalf("SASLInitialResponse = %q, want %q", msgs[0], want)
			}
			if string(msgs[1]) != rfcClientFinal {
				t.Fatalf("client-final = %q, want %q", msgs[1], rfcClientFinal)
			}
		})
	}
}

func TestLoginServerSignature(t *testing.T) {
	cred := Credential{User: "user", Secret: Secret{Kind: KindPlain, Plain: "pencil"}}
	for name, tc := range map[string]struct {
		msgs [][]byte
		code string
		want string
	}{
		"wrong signature": {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, rfcServerFirst), authMsg(12, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), authMsg(0, "")}, "28000", "server signature"},
		"ok before final": {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, rfcServerFirst), authMsg(0, "")}, "28000", "before proving"},
		"nonce not ours":  {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, "r=someoneelse,s="+rfcSalt+",i=4096")}, "08P01", "malformed"},
		"server error":    {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, rfcServerFirst), authMsg(12, "e=invalid-proof")}, "28000", "invalid-proof"},
		"final first":     {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(12, rfcServerFinal)}, "08P01", "out of turn"},
		"bad iterations":  {[][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, "r="+rfcClientNonce+"x,s="+rfcSalt+",i=0")}, "08P01", "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			err := login(&bytes.Buffer{}, scriptedBackend(tc.msgs...), &cred, rfcClientNonce, "user")
			var pe *pgerr.Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(err.Error()+pe.Detail, tc.want) {
				t.Fatalf("login: %v, want %s containing %q", err, tc.code, tc.want)
			}
		})
	}
}

// exchange runs a client (this package's own client side) against s with
// password and returns the server's reply to the proof.
func exchange(t *testing.T, s *SCRAMServer, password string) (serverFirst string, final []byte, err error) {
	t.Helper()
	sc := &scramClient{nonce: "clientnonce", bare: "n=,r=clientnonce"}
	cont, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", "n,,"+sc.bare))
	if err != nil {
		t.Fatal(err)
	}
	serverFirst = string(cont[4:])
	cf, err := sc.clientFinal(&Credential{User: "x", Secret: Secret{Kind: KindPlain, Plain: password}}, serverFirst)
	if err != nil {
		t.Fatal(err)
	}
	final, err = s.ClientFinal([]byte(cf))
	if err == nil {
		if verr := sc.verifyServer("x", string(final[4:])); verr != nil {
			t.Fatalf("server signature: %v", verr)
		}
	}
	return serverFirst, final, err
}

func TestSCRAMServerWrongPasswordAndUnknownUser(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	shape := regexp.MustCompile(`^r=clientnonce[A-Za-z0-9+/]{24},s=[A-Za-z0-9+/]{22}==,i=4096$`)

	first, _, err := exchange(t, NewSCRAMServer("user", rfcSecret(t)), "pencil")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if !strings.Contains(first, "s="+rfcSalt+",") {
		t.Fatalf("server-first %q does not carry the verifier's salt", first)
	}

	var errs []error
	for _, tc := range []struct {
		user string
		sec  Secret
	}{
		{"user", rfcSecret(t)},            // wrong password
		{"user", FakeSecret("user", key)}, // unknown user: the caller uses FakeSecret
	} {
		s := NewSCRAMServer(tc.user, tc.sec)
		first, final, err := exchange(t, s, "not pencil")
		if final != nil || !errors.Is(err, ErrPasswordMismatch) {
			t.Fatalf("%v: final %q, err %v; want ErrPasswordMismatch", tc.sec, final, err)
		}
		if !shape.MatchString(first) {
			t.Fatalf("server-first %q has another shape than a real user's", first)
		}
		if c := s.Credential(); c.CanLogin() {
			t.Fatal("a failed exchange left a usable credential")
		}
		errs = append(errs, err)
	}
	// The client, and the logs, see the same for both.
	if errs[0].Error() != errs[1].Error() {
		t.Fatalf("wrong password: %q; unknown user: %q", errs[0], errs[1])
	}
	if r0, r1 := pgerr.Response(errs[0], "", ""), pgerr.Response(errs[1], "", ""); r0.Code != r1.Code || r0.Message != r1.Message || r0.Detail != r1.Detail || r0.Severity != r1.Severity || r0.Code != "28P01" || r0.Message != `password authentication failed for user "user"` {
		t.Fatalf("responses differ or are not PostgreSQL's: %+v / %+v", r0, r1)
	}
	// FakeSecret is deterministic per user and key.
	a, b, c := FakeSecret("ghost", key), FakeSecret("ghost", key), FakeSecret("ghost2", key)
	if !bytes.Equal(a.Salt, b.Salt) || bytes.Equal(a.Salt, c.Salt) || bytes.Equal(a.Salt, FakeSecret("ghost", []byte("other key")).Salt) || len(a.Salt) != 16 {
		t.Fatal("FakeSecret is not a deterministic per-user, per-key salt")
	}
}

func TestSCRAMServerSecretKinds(t *testing.T) {
	// A plaintext works through its derived verifier, with the same salt
	// every time for the user (no enumeration by salt).
	plain := Secret{Kind: KindPlain, Plain: "pencil"}
	f1, _, err := exchange(t, NewSCRAMServer("bob", plain), "pencil")
	if err != nil {
		t.Fatal(err)
	}
	f2, _, _ := exchange(t, NewSCRAMServer("bob", plain), "pencil")
	if salt := func(s string) string { return strings.Split(s, ",")[1] }; salt(f1) != salt(f2) {
		t.Fatalf("a plaintext user's salt changed: %q, %q", f1, f2)
	}
	s := NewSCRAMServer("bob", plain)
	if _, _, err := exchange(t, s, "pencil"); err != nil {
		t.Fatal(err)
	}
	if c := s.Credential(); c.Secret.Kind != KindPlain || c.Secret.Plain != "pencil" || c.ClientKey != nil {
		t.Fatalf("plaintext credential = %v", c)
	}
	// An md5 secret cannot verify SCRAM: the exchange fails as a mismatch,
	// the cause says why.
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9")
	_, _, err = exchange(t, NewSCRAMServer("user", md5sec), "pencil")
	if !errors.Is(err, ErrPasswordMismatch) || !strings.Contains(err.Error(), "md5 secret") {
		t.Fatalf("md5 secret: %v", err)
	}
}

func TestSCRAMServerMalformed(t *testing.T) {
	for name, tc := range map[string]struct {
		first, final string
		mech         string
		code, want   string
	}{
		"channel binding required": {first: "p=tls-server-end-point,,n=,r=abc", code: "08P01", want: "channel binding data"},
		"bad flag":                 {first: "x,,n=,r=abc", code: "08P01", want: "channel-binding flag"},
		"authzid":                  {first: "n,a=bob,n=,r=abc", code: "0A000", want: "authorization identity"},
		"mandatory extension":      {first: "n,,m=ext,n=,r=abc", code: "0A000", want: "extension"},
		"no nonce":                 {first: "n,,n=", code: "08P01", want: "malformed"},
		"non-printable nonce":      {first: "n,,n=,r=a\x01b", code: "08P01", want: "malformed"},
		"empty":                    {first: "", code: "08P01", want: "malformed"},
		"NUL":                      {first: "n,,n=,r=a\x00", code: "08P01", want: "malformed"},
		"other mechanism":          {mech: "SCRAM-SHA-256-PLUS", first: "p=tls-server-end-point,,n=,r=abc", code: "08P01", want: "invalid SASL authentication mechanism"},
		"y then biws":              {first: "y,,n=,r=abc", final: "c=biws,r=abc{{s}},p=" + strings.Repeat("A", 43) + "=", code: "08P01", want: "channel-binding"},
		"nonce changed":            {first: "n,,n=,r=abc", final: "c=biws,r=abcX,p=" + strings.Repeat("A", 43) + "=", code: "08P01", want: "invalid SCRAM response"},
		"short proof":              {first: "n,,n=,r=abc", final: "c=biws,r=abc{{s}},p=AAAA", code: "08P01", want: "malformed"},
		"garbage after proof":      {first: "n,,n=,r=abc", final: "c=biws,r=abc{{s}},p=" + strings.Repeat("A", 43) + "=,x=1", code: "08P01", want: "malformed"},
		"no proof":                 {first: "n,,n=,r=abc", final: "c=biws,r=abc{{s}}", code: "08P01", want: "malformed"},
	} {
		t.Run(name, func(t *testing.T) {
			mech := tc.mech
			if mech == "" {
				mech = "SCRAM-SHA-256"
			}
			s := newSCRAMServer("user", rfcSecret(t), "SNONCE")
			_, err := s.ClientFirst(initialResponse(mech, tc.first))
			if tc.final != "" {
				if err != nil {
					t.Fatal(err)
				}
				_, err = s.ClientFinal([]byte(strings.ReplaceAll(tc.final, "{{s}}", "SNONCE")))
			}
			var pe *pgerr.Error
			if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Message+" "+pe.Detail, tc.want) {
				t.Fatalf("err = %v (detail %q), want %s containing %q", err, detail(err), tc.code, tc.want)
			}
			if errors.Is(err, ErrPasswordMismatch) {
				t.Fatal("a malformed message reported as a wrong password")
			}
		})
	}
	// Out of order, and no second try.
	s := NewSCRAMServer("user", rfcSecret(t))
	if _, err := s.ClientFinal([]byte("c=biws")); err == nil {
		t.Fatal("ClientFinal before ClientFirst accepted")
	}
	s = NewSCRAMServer("user", rfcSecret(t))
	if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", "n,,n=,r=abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", "n,,n=,r=abc")); err == nil {
		t.Fatal("second ClientFirst accepted")
	}
}

func detail(err error) string {
	var pe *pgerr.Error
	if errors.As(err, &pe) {
		return pe.Detail
	}
	return ""
}

func TestParseInitialResponse(t *testing.T) {
	for name, body := range map[string][]byte{
		"no NUL":         []byte("SCRAM-SHA-256"),
		"no length":      []byte("SCRAM-SHA-256\x00\x00\x00"),
		"length too big": append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 9, 'n'),
		"length short":   append([]byte("SCRAM-SHA-256\x00"), 0, 0, 0, 1, 'n', ','),
	} {
		if _, _, err := parseInitialResponse(body); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
