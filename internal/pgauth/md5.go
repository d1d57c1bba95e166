package pgauth

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// MD5Challenge returns a fresh random salt for AuthenticationMD5Password.
func MD5Challenge() (salt [4]byte) {
	_, _ = rand.Read(salt[:]) // never fails
	return salt
}

// VerifyMD5 checks a client's PasswordMessage body (a NUL-terminated
// "md5" + hex(md5(md5secret[3:] + salt))) against sec, an md5 secret or a
// plaintext, and returns the Credential for backend logins. A wrong
// response is a *pgerr.Error 28P01 wrapping ErrPasswordMismatch (constant
// time comparison). A SCRAM secret cannot verify md5 (the caller should
// offer SCRAM for it); that also fails as a mismatch, the wrapped cause
// saying why. A body that is not one NUL-terminated string is 08P01.
func VerifyMD5(user string, sec Secret, salt [4]byte, response []byte) (Credential, error) {
	if len(response) > MaxAuthMessage {
		return Credential{}, pgerr.New(pgerr.ProtocolViolation, "invalid password packet size")
	}
	i := bytes.IndexByte(response, 0)
	if i < 0 || i != len(response)-1 {
		return Credential{}, pgerr.New(pgerr.ProtocolViolation, "invalid password packet size")
	}
	got := response[:i]
	var stored string
	switch sec.Kind {
	case KindMD5:
		stored = sec.MD5
	case KindPlain:
		stored = md5Secret(sec.Plain, user)
	default:
		// The same work as a real check, against a hash nobody knows.
		_ = md5Response(md5Secret(randomNonce(), user), salt)
		return Credential{}, passwordFailed(user, fmt.Errorf("%w: user %q has %s secret, which cannot verify md5", ErrPasswordMismatch, user, article(sec)))
	}
	want := md5Response(stored, salt)
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return Credential{}, passwordFailed(user, ErrPasswordMismatch)
	}
	return Credential{User: user, Secret: cloneSecret(sec)}, nil
}

// md5Secret is what PostgreSQL stores for an md5 password:
// "md5" + hex(md5(password + user)).
func md5Secret(password, user string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// md5Response is the client's answer to an md5 challenge:
// "md5" + hex(md5(secret[3:] + salt)).
func md5Response(secret string, salt [4]byte) []byte {
	h := md5.New()
	h.Write([]byte(secret[3:]))
	h.Write(salt[:])
	return hex.AppendEncode([]byte("md5"), h.Sum(nil))
}
