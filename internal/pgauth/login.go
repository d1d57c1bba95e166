package pgauth

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/ofitec/pgproxy/internal/pgerr"
	"github.com/ofitec/pgproxy/internal/pgwire"
)

// maxLoginMessage caps what Login reads of one backend message
// (Authentication* requests are small; an ErrorResponse may carry a long
// detail).
const maxLoginMessage = 1 << 20

// Login runs the frontend side of authentication with a backend, after the
// caller wrote the StartupMessage (for cred.User): it reads Authentication*
// requests from br and answers on w until AuthenticationOk, and returns nil
// once it has read that (the caller reads ParameterStatus, BackendKeyData
// and ReadyForQuery). If w has a Flush() error method (a *bufio.Writer), it
// is flushed after each answer. Deadlines are the caller's, on the
// connection.
//
// Methods: AuthenticationOk (trust), cleartext (only with a plaintext), md5
// (md5 secret or plaintext), SASL SCRAM-SHA-256 with a plaintext or with a
// ClientKey and its verifier (ClientProof = ClientKey XOR HMAC(StoredKey,
// AuthMessage); the backend must prove itself with ServerSignature =
// HMAC(ServerKey, AuthMessage), checked in constant time). The GS2 flag is
// always "n" (no channel binding), even when the backend offers
// SCRAM-SHA-256-PLUS.
//
// Errors: a backend ErrorResponse is returned as a *pgerr.Error with the
// backend's SQLSTATE, severity, message, detail and hint; a method pgproxy
// cannot answer (GSSAPI, SSPI, SCRAM-SHA-256-PLUS only, or one the
// credential has nothing for) is a *pgerr.Error 28000 naming it; a backend
// whose SCRAM salt or iterations differ from the credential's verifier is a
// *pgerr.Error 28P01 saying the secrets do not match; a backend that breaks
// the protocol is 08P01; I/O errors are returned wrapped.
func Login(w io.Writer, br *bufio.Reader, cred *Credential) error {
	return login(w, br, cred, randomNonce(), "")
}

// scramClient is the state of one SCRAM exchange as a client.
type scramClient struct {
	nonce, bare string // client nonce; client-first-message-bare
	serverSig   []byte // the ServerSignature the backend must send
	step        int    // 1 after client-first, 2 after client-final, 3 verified
}

// login is Login with a given client nonce and SCRAM user name (tests: the
// RFC 7677 vector; PostgreSQL wants "n=" empty).
func login(w io.Writer, br *bufio.Reader, cred *Credential, nonce, saslUser string) error {
	user := cred.User
	var sc *scramClient
	answered := false // a cleartext or md5 answer was sent: only Ok or an error may follow
	defer func() {
		if sc != nil {
			wipe(sc.serverSig)
		}
	}()
	for {
		typ, body, err := pgwire.ReadMessage(br, maxLoginMessage)
		if err != nil {
			return fmt.Errorf("pgauth: login as %q: reading the backend's answer: %w", user, err)
		}
		switch typ {
		case 'E':
			return backendError(body)
		case 'N':
			continue
		case 'R':
		default:
			return pgerr.New(pgerr.ProtocolViolation, "backend sent message type %q during authentication", typ)
		}
		if len(body) < 4 {
			return pgerr.New(pgerr.ProtocolViolation, "backend sent a truncated authentication request")
		}
		code, data := binary.BigEndian.Uint32(body), body[4:]
		if code != authOK && (answered || (sc != nil && code != authSASLContinue && code != authSASLFinal)) {
			return pgerr.New(pgerr.ProtocolViolation, "backend sent authentication request %d in the middle of another method", code)
		}
		var reply []byte
		switch code {
		case authOK:
			if sc != nil && sc.step != 3 {
				return pgerr.New(pgerr.InvalidAuthorization, "backend ended SCRAM authentication for user %q before proving it knows the user's secret", user)
			}
			return nil
		case authCleartextPassword:
			if cred.Secret.Kind != KindPlain {
				return cannot(user, "a cleartext password", cred)
			}
			reply = pgwire.AppendMessage(nil, 'p', append([]byte(cred.Secret.Plain), 0))
			answered = true
		case authMD5Password:
			if len(data) != 4 {
				return pgerr.New(pgerr.ProtocolViolation, "backend sent an md5 request with a %d-byte salt", len(data))
			}
			var stored string
			switch cred.Secret.Kind {
			case KindMD5:
				stored = cred.Secret.MD5
			case KindPlain:
				stored = md5Secret(cred.Secret.Plain, user)
			default:
				return cannot(user, "md5 authentication", cred)
			}
			reply = pgwire.AppendMessage(nil, 'p', append(md5Response(stored, [4]byte(data)), 0))
			answered = true
		case authSASL:
			mechs, err := parseMechanisms(data)
			if err != nil {
				return err
			}
			if !slices.Contains(mechs, SCRAMSHA256) {
				if slices.Contains(mechs, SCRAMSHA256+"-PLUS") {
					return pgerr.New(pgerr.InvalidAuthorization, "backend offers only SCRAM-SHA-256-PLUS (channel binding) for user %q, which pgproxy does not support", user)
				}
				return pgerr.New(pgerr.InvalidAuthorization, "backend offers SASL mechanisms %q for user %q, none of which pgproxy supports", mechs, user)
			}
			switch {
			case cred.Secret.Kind == KindPlain:
			case cred.Secret.Kind == KindSCRAM && cred.CanLogin():
			case cred.Secret.Kind == KindSCRAM:
				return pgerr.New(pgerr.InvalidAuthorization, "backend asks for SCRAM-SHA-256 for user %q, and the proxy has no ClientKey for it yet (learnt from a client's SCRAM login)", user)
			default:
				return cannot(user, "SCRAM-SHA-256 authentication", cred)
			}
			sc = &scramClient{nonce: nonce, bare: "n=" + saslUser + ",r=" + nonce}
			first := "n,," + sc.bare
			b := append([]byte(SCRAMSHA256), 0)
			b = binary.BigEndian.AppendUint32(b, uint32(len(first)))
			reply = pgwire.AppendMessage(nil, 'p', append(b, first...))
			sc.step = 1
		case authSASLContinue:
			if sc == nil || sc.step != 1 {
				return pgerr.New(pgerr.ProtocolViolation, "backend sent AuthenticationSASLContinue out of turn")
			}
			final, err := sc.clientFinal(cred, string(data))
			if err != nil {
				return err
			}
			reply = pgwire.AppendMessage(nil, 'p', []byte(final))
			sc.step = 2
		case authSASLFinal:
			if sc == nil || sc.step != 2 {
				return pgerr.New(pgerr.ProtocolViolation, "backend sent AuthenticationSASLFinal out of turn")
			}
			if err := sc.verifyServer(user, string(data)); err != nil {
				return err
			}
			sc.step = 3
			continue
		case authKerberosV5:
			return unsupported(user, "Kerberos V5")
		case authSCMCredential:
			return unsupported(user, "SCM credential")
		case authGSS, authGSSContinue:
			return unsupported(user, "GSSAPI")
		case authSSPI:
			return unsupported(user, "SSPI")
		default:
			return pgerr.New(pgerr.ProtocolViolation, "backend asks for unknown authentication method %d", code)
		}
		if _, err := w.Write(reply); err != nil {
			return fmt.Errorf("pgauth: login as %q: %w", user, err)
		}
		if f, ok := w.(interface{ Flush() error }); ok {
			if err := f.Flush(); err != nil {
				return fmt.Errorf("pgauth: login as %q: %w", user, err)
			}
		}
	}
}

func unsupported(user, method string) error {
	return pgerr.New(pgerr.InvalidAuthorization, "backend asks for %s authentication for user %q, which pgproxy does not support", method, user)
}

// cannot: the backend asks for something the credential cannot answer.
func cannot(user, what string, cred *Credential) error {
	e := pgerr.New(pgerr.InvalidAuthorization, "backend asks for %s for user %q, which the proxy's %s secret cannot answer", what, user, cred.Secret.Kind)
	switch cred.Secret.Kind {
	case KindSCRAM, KindMD5:
		e.Hint = "Use scram-sha-256 in the backend's pg_hba.conf for this user, with the same verifier as the proxy's."
	}
	return e
}

// parseMechanisms splits the body of AuthenticationSASL after its code: a
// list of NUL-terminated names ended by an empty one.
func parseMechanisms(data []byte) ([]string, error) {
	var out []string
	for {
		i := bytes.IndexByte(data, 0)
		if i < 0 {
			return nil, pgerr.New(pgerr.ProtocolViolation, "backend sent a malformed SASL mechanism list")
		}
		if i == 0 {
			return out, nil
		}
		out = append(out, string(data[:i]))
		data = data[i+1:]
	}
}

// clientFinal reads server-first-message and builds client-final-message.
func (sc *scramClient) clientFinal(cred *Credential, serverFirst string) (string, error) {
	in := serverFirst
	if in != "" && in[0] == 'm' {
		return "", malformedBackend("server-first-message requires an unsupported extension")
	}
	nonce, in, err := readAttr(in, 'r')
	if err != nil {
		return "", backendMalformed(err)
	}
	if len(nonce) <= len(sc.nonce) || !strings.HasPrefix(nonce, sc.nonce) || !printable(nonce) {
		return "", malformedBackend("server nonce does not extend the client's")
	}
	saltStr, in, err := readAttr(in, 's')
	if err != nil {
		return "", backendMalformed(err)
	}
	salt, err := base64.StdEncoding.Strict().DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return "", malformedBackend("invalid salt")
	}
	iterStr, in, err := readAttr(in, 'i')
	if err != nil {
		return "", backendMalformed(err)
	}
	iter, err := strconv.Atoi(iterStr)
	if err != nil || iter < 1 || iter > maxIterations || iterStr[0] == '+' {
		return "", malformedBackend("invalid iteration count")
	}
	for in != "" { // extensions, ignored
		if _, _, in, err = readAnyAttr(in); err != nil {
			return "", backendMalformed(err)
		}
	}

	var clientKey, storedKey, serverKey []byte
	if cred.Secret.Kind == KindPlain {
		clientKey, storedKey, serverKey = scramKeys(cred.Secret.Plain, salt, iter)
		defer wipe(clientKey)
		defer wipe(serverKey)
	} else {
		if iter != cred.Secret.Iterations || subtle.ConstantTimeCompare(salt, cred.Secret.Salt) != 1 {
			e := pgerr.New(pgerr.InvalidPassword, "backend's SCRAM secret for user %q does not match the proxy's: update auth.file / auth.query", cred.User)
			e.Detail = fmt.Sprintf("The backend's verifier has %d iterations and a %d-byte salt, the proxy's %d iterations and %s salt.", iter, len(salt), cred.Secret.Iterations, sameOrOther(salt, cred.Secret.Salt))
			return "", e
		}
		clientKey, storedKey, serverKey = cred.ClientKey, cred.Secret.StoredKey, cred.Secret.ServerKey
	}
	withoutProof := "c=biws,r=" + nonce
	auth := []byte(sc.bare + "," + serverFirst + "," + withoutProof)
	proof := xorBytes(clientKey, hmacSHA256(storedKey, auth))
	sc.serverSig = hmacSHA256(serverKey, auth)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), nil
}

func sameOrOther(a, b []byte) string {
	if len(a) != len(b) {
		return fmt.Sprintf("a %d-byte", len(b))
	}
	return "another"
}

// verifyServer checks server-final-message: "v=" ServerSignature, or "e=" error.
func (sc *scramClient) verifyServer(user, serverFinal string) error {
	if strings.HasPrefix(serverFinal, "e=") {
		msg, _, _ := strings.Cut(serverFinal[2:], ",")
		return pgerr.New(pgerr.InvalidAuthorization, "backend's SCRAM exchange for user %q failed: %s", user, msg)
	}
	v, _, err := readAttr(serverFinal, 'v')
	if err != nil {
		return backendMalformed(err)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(v)
	if err != nil || len(sig) != keyLen {
		return malformedBackend("malformed server signature")
	}
	if subtle.ConstantTimeCompare(sig, sc.serverSig) != 1 {
		return pgerr.New(pgerr.InvalidAuthorization, "backend's SCRAM server signature for user %q is wrong: it does not hold the user's verifier", user)
	}
	return nil
}

func malformedBackend(detail string) error {
	e := pgerr.New(pgerr.ProtocolViolation, "backend sent a malformed SCRAM message")
	e.Detail = detail
	e.Err = fmt.Errorf("%s", detail)
	return e
}

// backendMalformed rewords a parse error of the shared attribute reader
// (worded for a client's messages) as the backend's.
func backendMalformed(err error) error {
	if pe, ok := err.(*pgerr.Error); ok && pe.Detail != "" {
		return malformedBackend(pe.Detail)
	}
	return malformedBackend(err.Error())
}

// backendError turns an ErrorResponse body into a *pgerr.Error that keeps
// the backend's fields.
func backendError(body []byte) error {
	e := &pgerr.Error{}
	var sev string
	for len(body) > 1 {
		f := body[0]
		v, rest := pgwire.CutCString(body[1:])
		switch f {
		case 'S':
			if e.Severity == "" {
				e.Severity = v
			}
		case 'V':
			sev = v
		case 'C':
			e.Code = v
		case 'M':
			e.Message = v
		case 'D':
			e.Detail = v
		case 'H':
			e.Hint = v
		}
		body = rest
	}
	if sev != "" {
		e.Severity = sev
	}
	if e.Severity == "" {
		e.Severity = "FATAL"
	}
	if e.Code == "" {
		e.Code = pgerr.InternalError
	}
	return e
}
