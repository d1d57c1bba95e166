package pgauth

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"strings"
	"testing"
)

func FuzzParseUserlist(f *testing.F) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	v := SCRAMVerifier("pencil", salt, 4096)
	f.Add(`"alice" "` + v + `"` + "\n; c\n# c\n" + `"bob" "md520c46e3762c864548e296b33c3406aa9" x`)
	f.Add(`"o""b" "p""w"`)
	f.Add(`"alice" "SCRAM-SHA-256$1:$:"`)
	f.Add(`"a`)
	f.Add("\uFEFF\"a\" \"b\"\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		ul, warnings, err := ParseUserlist(strings.NewReader(s), "f")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f:") {
				t.Fatalf("error without file:line: %v", err)
			}
			return
		}
		for user, sec := range ul {
			if user == "" || sec.Kind == KindNone {
				t.Fatalf("accepted user %q with %v", user, sec)
			}
			if sec.Kind == KindSCRAM && !sec.hasSCRAM() {
				t.Fatalf("incomplete verifier for %q", user)
			}
		}
		_ = warnings
	})
}

func FuzzParseSecret(f *testing.F) {
	salt, _ := base64.StdEncoding.DecodeString(rfcSalt)
	f.Add(SCRAMVerifier("pencil", salt, 4096))
	f.Add("md520c46e3762c864548e296b33c3406aa9")
	f.Add("SCRAM-SHA-256$4096:$:")
	f.Add("pencil")
	f.Fuzz(func(t *testing.T, s string) {
		sec, err := ParseSecret(s)
		if err != nil {
			return
		}
		switch sec.Kind {
		case KindSCRAM:
			if !sec.hasSCRAM() || SCRAMVerifier("x", sec.Salt, sec.Iterations) == "" {
				t.Fatal("incomplete verifier")
			}
		case KindMD5:
			if len(sec.MD5) != 35 {
				t.Fatal("bad md5")
			}
		case KindPlain:
			if sec.Plain != s {
				t.Fatal("plaintext changed")
			}
		default:
			t.Fatal("no kind")
		}
	})
}

// FuzzSCRAMServerClientFirst: any SASLInitialResponse body, then any
// SASLResponse body; nothing panics, and only a valid proof succeeds.
func FuzzSCRAMServerClientFirst(f *testing.F) {
	f.Add(initialResponse("SCRAM-SHA-256", rfcClientFirst), []byte(rfcClientFinal))
	f.Add(initialResponse("SCRAM-SHA-256", "y,,n=,r=abc,x=1"), []byte("c=eSws,r=abcSNONCE,p=AAAA"))
	f.Add(initialResponse("SCRAM-SHA-256", "p=x,,n=,r=abc"), []byte(""))
	f.Add([]byte("SCRAM-SHA-256\x00\xff\xff\xff\xff"), []byte("c=biws"))
	f.Fuzz(func(t *testing.T, first, final []byte) {
		s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
		if _, err := s.ClientFirst(first); err != nil {
			return
		}
		if _, err := s.ClientFinal(final); err == nil {
			// Only the RFC's exchange knows the proof: any other
			// message changes the AuthMessage it signs.
			if !bytes.Equal(first, initialResponse("SCRAM-SHA-256", rfcClientFirst)) || string(final) != rfcClientFinal {
				t.Fatalf("a made-up proof passed: %q / %q", first, final)
			}
		}
	})
}

// FuzzSCRAMServerClientFinal: a fixed client-first, any client-final.
func FuzzSCRAMServerClientFinal(f *testing.F) {
	f.Add([]byte(rfcClientFinal))
	f.Add([]byte("c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,x=y,p=AAAA"))
	f.Add([]byte("c=biws,r=,p=,"))
	f.Add([]byte("c="))
	f.Fuzz(func(t *testing.T, final []byte) {
		s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
		if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256", rfcClientFirst)); err != nil {
			t.Fatal(err)
		}
		out, err := s.ClientFinal(final)
		if err == nil && (string(final) != rfcClientFinal || string(out[4:]) != rfcServerFinal) {
			t.Fatalf("accepted %q with %q", final, out)
		}
	})
}

// FuzzLogin: any byte stream from a backend; Login returns, without panic.
func FuzzLogin(f *testing.F) {
	f.Add(bytes.Join([][]byte{authMsg(10, "SCRAM-SHA-256\x00\x00"), authMsg(11, rfcServerFirst), authMsg(12, rfcServerFinal), authMsg(0, "")}, nil), false)
	f.Add(bytes.Join([][]byte{authMsg(5, "\x01\x02\x03\x04"), authMsg(0, "")}, nil), true)
	f.Add(authMsg(3, ""), true)
	f.Add([]byte("E\x00\x00\x00\x08C\x00\x00\x00"), false)
	f.Fuzz(func(t *testing.T, stream []byte, md5 bool) {
		// A ClientKey credential (a plaintext would let the stream ask
		// for billions of PBKDF2 iterations), or an md5 one.
		s := newSCRAMServer("user", rfcSecret(t), rfcServerNonce)
		_, _ = s.ClientFirst(initialResponse("SCRAM-SHA-256", rfcClientFirst))
		_, _ = s.ClientFinal([]byte(rfcClientFinal))
		cred := s.Credential()
		if md5 {
			cred.Secret, _ = ParseSecret("md520c46e3762c864548e296b33c3406aa9")
		}
		_ = login(io.Discard, bufio.NewReader(bytes.NewReader(stream)), &cred, rfcClientNonce, "user")
	})
}
