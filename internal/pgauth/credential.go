package pgauth

import "fmt"

// Credential is what the proxy logs in to backends with, for one user:
//
//   - a SCRAM verifier with the ClientKey recovered from a client's SCRAM
//     proof (SCRAMServer.Credential): no plaintext needed;
//   - an md5 secret (VerifyMD5 with an md5 secret);
//   - a plaintext (a KindPlain secret).
//
// Its byte slices are its own copies: Zero wipes them without touching the
// Userlist or cache the secret came from. Strings (MD5, Plain) cannot be
// wiped in Go; Zero drops them. String and GoString show no key material.
type Credential struct {
	User      string
	Secret    Secret
	ClientKey []byte
}

// Zero wipes the key material and leaves a Credential that cannot log in.
func (c *Credential) Zero() {
	wipe(c.ClientKey)
	wipe(c.Secret.Salt)
	wipe(c.Secret.StoredKey)
	wipe(c.Secret.ServerKey)
	c.ClientKey = nil
	c.Secret = Secret{}
}

// CanLogin reports whether c has something a backend can verify: a ClientKey
// with its SCRAM verifier, an md5 secret, or a plaintext.
func (c *Credential) CanLogin() bool {
	switch c.Secret.Kind {
	case KindSCRAM:
		return len(c.ClientKey) == keyLen && c.Secret.hasSCRAM()
	case KindMD5:
		return len(c.Secret.MD5) == 35
	case KindPlain:
		return c.Secret.Plain != ""
	}
	return false
}

// String names the user and what the credential holds, no key material.
func (c Credential) String() string {
	what := c.Secret.String()
	if c.Secret.Kind == KindSCRAM {
		if len(c.ClientKey) == keyLen {
			what += " with ClientKey"
		} else {
			what += " without ClientKey"
		}
	}
	return fmt.Sprintf("credential for %q: %s", c.User, what)
}

// GoString is String.
func (c Credential) GoString() string { return "pgauth.Credential(" + c.String() + ")" }

// cloneSecret copies s's byte slices, so the copy can be wiped.
func cloneSecret(s Secret) Secret {
	s.Salt = clone(s.Salt)
	s.StoredKey = clone(s.StoredKey)
	s.ServerKey = clone(s.ServerKey)
	return s
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}
