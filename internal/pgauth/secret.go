package pgauth

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Kind is the kind of a Secret. The zero Kind is no secret at all.
type Kind uint8

const (
	KindNone  Kind = iota // no secret (the zero Secret)
	KindSCRAM             // a SCRAM-SHA-256 verifier
	KindMD5               // "md5" + md5(password + user) in hex
	KindPlain             // a plaintext password
)

func (k Kind) String() string {
	switch k {
	case KindSCRAM:
		return "SCRAM-SHA-256"
	case KindMD5:
		return "md5"
	case KindPlain:
		return "plaintext"
	}
	return "none"
}

const (
	scramPrefix = "SCRAM-SHA-256$"
	keyLen      = sha256.Size // StoredKey, ServerKey, ClientKey, proofs
	saltLen     = 16          // PostgreSQL's SCRAM_DEFAULT_SALT_LEN
	// DefaultIterations is PostgreSQL's default scram_iterations, used for
	// the verifiers this package derives (plaintext and fake users).
	DefaultIterations = 4096
	maxIterations     = 1<<31 - 1
)

// Secret is what pgproxy knows of a user's password: never the plaintext
// unless Kind is KindPlain.
//
// For KindSCRAM, Iterations, Salt, StoredKey and ServerKey are the verifier.
// For KindMD5, MD5 is "md5" + 32 lowercase hex digits. For KindPlain, Plain
// is the password; Iterations, Salt, StoredKey and ServerKey may also be set
// to the verifier this process derives from it for SCRAM with clients (salt
// HMAC-SHA-256(per-process random key, user), DefaultIterations), filled by
// ParseUserlist and QuerySource so no client login pays for PBKDF2.
//
// Treat the byte slices of a Secret from a Userlist or a QuerySource as
// read-only: they are shared. String and GoString show the kind only, so
// printing a Secret with any verb shows no key material.
type Secret struct {
	Kind       Kind
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
	MD5        string
	Plain      string
}

// ParseSecret decodes a secret as PostgreSQL stores it (pg_authid.rolpassword)
// or PgBouncer's auth_file holds it:
//
//	SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>
//	md5<32 hex digits>
//	anything else, non-empty: a plaintext
//
// A string that starts like a SCRAM verifier or an md5 hash but is not a
// valid one is an error, not a plaintext: a truncated verifier must not
// silently become a password. Errors describe the problem, never the secret.
func ParseSecret(s string) (Secret, error) {
	switch {
	case s == "":
		return Secret{}, errors.New("empty secret")
	case strings.HasPrefix(s, scramPrefix):
		return parseSCRAMSecret(s[len(scramPrefix):])
	case strings.HasPrefix(s, "md5") && looksMD5(s[3:]):
		if len(s) != 35 {
			return Secret{}, fmt.Errorf("bad md5 secret: want \"md5\" and 32 hex digits, have %d hex digits", len(s)-3)
		}
		return Secret{Kind: KindMD5, MD5: "md5" + strings.ToLower(s[3:])}, nil
	}
	return Secret{Kind: KindPlain, Plain: s}, nil
}

// looksMD5 reports whether s is all hex digits and long enough to be meant
// as an md5 hash (a password "md5sum" is a plaintext; "md5" + 31 or 33 hex
// digits is a broken hash).
func looksMD5(s string) bool {
	if len(s) < 24 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func parseSCRAMSecret(rest string) (Secret, error) {
	bad := func(format string, args ...any) (Secret, error) {
		return Secret{}, fmt.Errorf("bad SCRAM-SHA-256 secret: "+format+" (want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)", args...)
	}
	params, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return bad("no '$' between the salt and the keys")
	}
	iterStr, saltStr, ok := strings.Cut(params, ":")
	if !ok {
		return bad("no ':' between the iterations and the salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return bad("no ':' between StoredKey and ServerKey")
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > maxIterations || iterStr[0] == '+' {
		return bad("iterations is not a positive number")
	}
	salt, err := base64.StdEncoding.Strict().DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return bad("salt is not base64")
	}
	stored, err := base64.StdEncoding.Strict().DecodeString(storedStr)
	if err != nil || len(stored) != keyLen {
		return bad("StoredKey is not %d bytes of base64", keyLen)
	}
	server, err := base64.StdEncoding.Strict().DecodeString(serverStr)
	if err != nil || len(server) != keyLen {
		return bad("ServerKey is not %d bytes of base64", keyLen)
	}
	return Secret{Kind: KindSCRAM, Iterations: iter, Salt: salt, StoredKey: stored, ServerKey: server}, nil
}

// String names the kind of secret and nothing of its material:
// "SCRAM-SHA-256 (4096 iterations)", "md5", "plaintext", "none".
func (s Secret) String() string {
	if s.Kind == KindSCRAM {
		return fmt.Sprintf("SCRAM-SHA-256 (%d iterations)", s.Iterations)
	}
	return s.Kind.String()
}

// GoString is String, so %#v shows no key material either.
func (s Secret) GoString() string { return "pgauth.Secret(" + s.String() + ")" }

// hasSCRAM reports whether s carries a complete SCRAM verifier (a SCRAM
// secret, or a plaintext's derived one).
func (s Secret) hasSCRAM() bool {
	return s.Iterations > 0 && len(s.Salt) > 0 && len(s.StoredKey) == keyLen && len(s.ServerKey) == keyLen
}

// withDerivedSCRAM returns a plaintext secret with its SCRAM verifier for
// user filled in (other kinds unchanged). The salt is deterministic for the
// user within this process, so the verifier can be derived again at any
// time with the same result.
func (s Secret) withDerivedSCRAM(user string) Secret {
	if s.Kind != KindPlain || s.hasSCRAM() {
		return s
	}
	m := hmac.New(sha256.New, processKey())
	m.Write([]byte("pgauth plaintext salt\x00"))
	m.Write([]byte(user))
	salt := m.Sum(nil)[:saltLen]
	s.Iterations = DefaultIterations
	s.Salt = salt
	_, s.StoredKey, s.ServerKey = scramKeys(s.Plain, salt, DefaultIterations)
	return s
}

// processKey is a random key made once per process: the salts of
// plaintext users' derived verifiers, and FakeSecret without a key.
var processKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (it crashes the program instead)
	return k
})

// MockKey derives a key for FakeSecret from secret material that stays
// the same across restarts and across instances given the same files (the
// SCRAM verifiers of an auth file: UserlistMockMaterial; a TLS private
// key). The material must be secret and hard to guess: FakeSecret's salts,
// which anyone can ask for, are a function of it. Nil material gives nil.
func MockKey(material ...[]byte) []byte {
	if len(material) == 0 {
		return nil
	}
	m := hmac.New(sha256.New, []byte("pgproxy mock authentication key v1"))
	for _, b := range material {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		m.Write(n[:])
		m.Write(b)
	}
	return m.Sum(nil)
}

// UserlistMockMaterial returns the SCRAM verifiers of ul (user, iterations,
// salt, StoredKey, ServerKey, sorted by user) as MockKey material: secret,
// and unguessable (each has a random salt). md5 hashes and plaintexts are
// left out: a weak password would let FakeSecret's salts be checked
// against guesses. Nil when ul has no SCRAM verifier.
func UserlistMockMaterial(ul Userlist) []byte {
	users := make([]string, 0, len(ul))
	for u, sec := range ul {
		if sec.Kind == KindSCRAM && sec.hasSCRAM() {
			users = append(users, u)
		}
	}
	if len(users) == 0 {
		return nil
	}
	slices.Sort(users)
	var b []byte
	for _, u := range users {
		sec := ul[u]
		for _, part := range [][]byte{[]byte(u), []byte(strconv.Itoa(sec.Iterations)), sec.Salt, sec.StoredKey, sec.ServerKey} {
			b = binary.BigEndian.AppendUint32(b, uint32(len(part)))
			b = append(b, part...)
		}
	}
	return b
}

// FakeSecret returns a deterministic SCRAM verifier for a user that does not
// exist: salt and keys are HMAC-SHA-256 of the user name under key, with
// DefaultIterations. An unknown user gets the same salt every time, runs
// the same exchange as a real one and fails with the same
// ErrPasswordMismatch. key must be secret and stable (MockKey); an empty
// key uses a random key of this process. A fake user's salt changes when
// the key does (with the process key: at every restart, while a real
// user's stays), which a patient prober could notice.
func FakeSecret(user string, key []byte) Secret {
	if len(key) == 0 {
		key = processKey()
	}
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte("pgauth fake " + label + "\x00"))
		m.Write([]byte(user))
		return m.Sum(nil)
	}
	return Secret{
		Kind:       KindSCRAM,
		Iterations: DefaultIterations,
		Salt:       derive("salt")[:saltLen],
		StoredKey:  derive("stored key"),
		ServerKey:  derive("server key"),
	}
}

// SCRAMVerifier derives the verifier PostgreSQL would store for password
// with salt and iterations, in ParseSecret's format. For tests and tools
// (pgproxy never needs to make one at run time).
func SCRAMVerifier(password string, salt []byte, iterations int) string {
	_, stored, server := scramKeys(password, salt, iterations)
	b64 := base64.StdEncoding.EncodeToString
	return scramPrefix + strconv.Itoa(iterations) + ":" + b64(salt) + "$" + b64(stored) + ":" + b64(server)
}

// scramKeys derives ClientKey, StoredKey and ServerKey from a password
// (RFC 5802: SaltedPassword = Hi(password, salt, i)).
func scramKeys(password string, salt []byte, iterations int) (clientKey, storedKey, serverKey []byte) {
	salted := saltedPassword(password, salt, iterations)
	clientKey = hmacSHA256(salted, []byte("Client Key"))
	serverKey = hmacSHA256(salted, []byte("Server Key"))
	st := sha256.Sum256(clientKey)
	wipe(salted)
	return clientKey, st[:], serverKey
}

func saltedPassword(password string, salt []byte, iterations int) []byte {
	k, err := pbkdf2.Key(sha256.New, password, salt, iterations, keyLen)
	if err != nil {
		// Only in FIPS 140-only mode with a short password or salt: a
		// random key, so the derived verifier verifies nothing (a fixed
		// one would verify anybody).
		k = make([]byte, keyLen)
		_, _ = rand.Read(k)
	}
	return k
}

func hmacSHA256(key []byte, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func wipe(b []byte) {
	clear(b)
}
