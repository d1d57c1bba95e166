package pgauth

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// flushCounter is a writer with Flush, as a *bufio.Writer would be.
type flushCounter struct {
	bytes.Buffer
	flushes int
}

func (f *flushCounter) Flush() error { f.flushes++; return nil }

func TestLoginMethods(t *testing.T) {
	md5sec, _ := ParseSecret("md520c46e3762c864548e296b33c3406aa9")
	scram, _ := ParseSecret(rfcVerifier(t))
	plain := Secret{Kind: KindPlain, Plain: "pencil"}
	md5Req := authMsg(5, "\x01\x02\x03\x04")
	errResp := pgerr.Encode(nil, "FATAL", "28P01", `password authentication failed for user "user"`)

	for _, tc := range []struct {
		name  string
		sec   Secret
		key   bool
		msgs  [][]byte
		wrote []string // bodies of the PasswordMessages login sent
		code  string   // "" = success
		want  string
	}{
		{name: "trust", sec: scram, msgs: [][]byte{authMsg(0, "")}},
		{name: "md5 with md5 secret", sec: md5sec, msgs: [][]byte{md5Req, authMsg(0, "")}, wrote: []string{"md54376eb6913b38f9aaff38dc7cf19ca76\x00"}},
		{name: "md5 with plaintext", sec: plain, msgs: [][]byte{md5Req, authMsg(0, "")}, wrote: []string{"md54376eb6913b38f9aaff38dc7cf19ca76\x00"}},
		{name: "cleartext with plaintext", sec: plain, msgs: [][]byte{authMsg(3, ""), authMsg(0, "")}, wrote: []string{"pencil\x00"}},
		{name: "notice is skipped", sec: plain, msgs: [][]byte{pgwire.AppendMessage(nil, 'N', []byte("SNOTICE\x00Mhi\x00\x00")), authMsg(0, "")}},
		{name: "cleartext with md5 secret", sec: md5sec, msgs: [][]byte{authMsg(3, "")}, code: "28000", want: "cleartext password"},
		{name: "md5 with SCRAM secret", sec: scram, key: true, msgs: [][]byte{md5Req}, code: "28000", want: "md5 authentication"},
		{name: "SCRAM with md5 secret", sec: md5sec, msgs: [][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00")}, code: "28000", want: "SCRAM-SHA-256"},
		{name: "SCRAM without ClientKey", sec: scram, msgs: [][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00")}, code: "28000", want: "no ClientKey"},
		{name: "PLUS only", sec: plain, msgs: [][]byte{authMsg(10, "SCRAM-SHA-256-PLUS\x00\x00")}, code: "28000", want: "SCRAM-SHA-256-PLUS"},
		{name: "other SASL", sec: plain, msgs: [][]byte{authMsg(10, "OAUTHBEARER\x00\x00")}, code: "28000", want: "OAUTHBEARER"},
		{name: "GSSAPI", sec: plain, msgs: [][]byte{authMsg(7, "")}, code: "28000", want: "GSSAPI"},
		{name: "SSPI", sec: plain, msgs: [][]byte{authMsg(9, "")}, code: "28000", want: "SSPI"},
		{name: "Kerberos", sec: plain, msgs: [][]byte{authMsg(2, "")}, code: "28000", want: "Kerberos"},
		{name: "unknown method", sec: plain, msgs: [][]byte{authMsg(99, "")}, code: "08P01", want: "99"},
		{name: "backend error", sec: md5sec, msgs: [][]byte{md5Req, errResp}, wrote: []string{"md54376eb6913b38f9aaff38dc7cf19ca76\x00"}, code: "28P01", want: `password authentication failed for user "user"`},
		{name: "second request after an answer", sec: plain, msgs: [][]byte{md5Req, md5Req}, wrote: []string{"md54376eb6913b38f9aaff38dc7cf19ca76\x00"}, code: "08P01", want: "middle"},
		{name: "not an auth message", sec: plain, msgs: [][]byte{pgwire.AppendMessage(nil, 'Z', []byte("I"))}, code: "08P01", want: "'Z'"},
		{name: "short md5 salt", sec: plain, msgs: [][]byte{authMsg(5, "\x01")}, code: "08P01", want: "salt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := Credential{User: "user", Secret: tc.sec}
			if tc.key {
				cred.ClientKey = make([]byte, 32)
			}
			w := &flushCounter{}
			err := Login(w, scriptedBackend(tc.msgs...), &cred)
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				var pe *pgerr.Error
				if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Message, tc.want) {
					t.Fatalf("Login: %v; want %s containing %q", err, tc.code, tc.want)
				}
			}
			var wrote []string
			for _, b := range frontendMessages(t, w.Bytes()) {
				wrote = append(wrote, string(b))
			}
			if strings.Join(wrote, "|") != strings.Join(tc.wrote, "|") {
				t.Fatalf("wrote %q, want %q", wrote, tc.wrote)
			}
			if w.flushes != len(tc.wrote) {
				t.Fatalf("%d flushes for %d answers", w.flushes, len(tc.wrote))
			}
		})
	}
}

func TestLoginBackendErrorFields(t *testing.T) {
	body := []byte("SFATAL\x00VFATAL\x00C57P03\x00Mthe database system is starting up\x00DDetail here\x00HHint here\x00\x00")
	err := Login(&bytes.Buffer{}, scriptedBackend(pgwire.AppendMessage(nil, 'E', body)), &Credential{User: "u"})
	var pe *pgerr.Error
	if !errors.As(err, &pe) || pe.Code != "57P03" || pe.Severity != "FATAL" || pe.Message != "the database system is starting up" || pe.Detail != "Detail here" || pe.Hint != "Hint here" {
		t.Fatalf("%#v", err)
	}
}

func TestLoginSaltMismatch(t *testing.T) {
	// The proxy's verifier for "user" has the RFC's salt; a backend with a
	// verifier made for the same password with another salt cannot be
	// answered with the ClientKey.
	s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
	if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", rfcClientFirst)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ClientFinal([]byte(rfcClientFinal)); err != nil {
		t.Fatal(err)
	}
	cred := s.Credential()
	for _, first := range []string{
		"r=" + rfcClientNonce + "xyz,s=QSXCR+Q6sek8bf92,i=4096",
		"r=" + rfcClientNonce + "xyz,s=" + rfcSalt + ",i=4097",
	} {
		err := login(&bytes.Buffer{}, scriptedBackend(authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, first)), &cred, rfcClientNonce, "")
		var pe *pgerr.Error
		if !errors.As(err, &pe) || pe.Code != "28P01" || pe.Message != `backend's SCRAM secret for user "user" does not match the proxy's: update auth.file / auth.query` {
			t.Fatalf("%s: %v", first, err)
		}
	}
}

func TestLoginIOErrors(t *testing.T) {
	cred := Credential{User: "u", Secret: Secret{Kind: KindPlain, Plain: "p"}}
	err := Login(&bytes.Buffer{}, bufio.NewReader(bytes.NewReader(authMsg(5, "\x01\x02")[:4])), &cred)
	if err == nil || !strings.Contains(err.Error(), "reading the backend's answer") {
		t.Fatalf("truncated: %v", err)
	}
}
