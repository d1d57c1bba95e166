package pgauth

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"strconv"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// SCRAMServer runs the server side of SCRAM-SHA-256 for one client: the
// proxy authenticating a client.
//
//	proxy → client  AuthenticationSASL         Mechanisms()
//	client → proxy  SASLInitialResponse  →     ClientFirst(body) → AuthenticationSASLContinue body
//	client → proxy  SASLResponse         →     ClientFinal(body) → AuthenticationSASLFinal body
//	proxy → client  AuthenticationOk, …        Credential()
//
// Channel binding (SCRAM-SHA-256-PLUS, type tls-server-end-point, RFC 5929)
// is offered when OfferChannelBinding was given the hash of the certificate
// the client's TLS connection showed; the GS2 flags are then checked as
// PostgreSQL does (auth-scram.c): "p" only with -PLUS and its cbind-data
// must match ("SCRAM channel binding check failed", 28000), "n" only
// without it, and "y" (the client could bind but thinks the server cannot:
// a downgrade) is refused (28000). Without it, "n" and "y" are accepted and
// "p" is refused. The user name inside the
// SCRAM messages is ignored, as PostgreSQL does: the startup packet's
// counts. A SCRAMServer is single-use and not safe for concurrent use.
type SCRAMServer struct {
	user   string
	sec    Secret // the verifier the client is checked against
	plain  bool   // sec was derived from a plaintext
	doomed error  // set when the user's secret cannot verify SCRAM: the exchange runs and fails
	nonce  string // server nonce

	step            int // 0 before ClientFirst, 1 before ClientFinal, 2 done
	ok              bool
	cbind           byte
	endPoint        []byte // tls-server-end-point data: SCRAM-SHA-256-PLUS offered
	plus            bool   // the client chose SCRAM-SHA-256-PLUS
	clientNonce     string
	clientFirstBare string
	serverFirst     string
	clientKey       []byte
}

// NewSCRAMServer prepares an exchange for user against sec. A KindSCRAM
// secret is used as it is; a KindPlain one through its derived verifier
// (see Secret; derived now if ParseUserlist or QuerySource did not). Any
// other secret (md5, none, a broken verifier) cannot verify SCRAM: the
// exchange then runs against FakeSecret and ends in ErrPasswordMismatch, the
// wrapped cause saying why, so the client learns nothing more than from a
// wrong password.
func NewSCRAMServer(user string, sec Secret) *SCRAMServer {
	return newSCRAMServer(user, sec, randomNonce())
}

// newSCRAMServer is NewSCRAMServer with a given server nonce (tests: the
// RFC 7677 vector).
func newSCRAMServer(user string, sec Secret, nonce string) *SCRAMServer {
	s := &SCRAMServer{user: user, nonce: nonce}
	switch {
	case sec.Kind == KindSCRAM && sec.hasSCRAM():
		s.sec = sec
	case sec.Kind == KindPlain:
		s.sec = sec.withDerivedSCRAM(user)
		s.plain = true
	default:
		s.sec = FakeSecret(user, nil)
		s.doomed = fmt.Errorf("%w: user %q has %s secret, which cannot verify SCRAM-SHA-256", ErrPasswordMismatch, user, article(sec))
	}
	return s
}

func article(sec Secret) string {
	switch sec.Kind {
	case KindMD5:
		return "an md5"
	case KindSCRAM:
		if sec.hasSCRAM() {
			return "a SCRAM-SHA-256"
		}
		return "a broken SCRAM-SHA-256"
	case KindPlain:
		return "a plaintext"
	}
	return "no"
}

func randomNonce() string {
	var raw [rawNonceLen]byte
	_, _ = rand.Read(raw[:]) // never fails
	return base64.StdEncoding.EncodeToString(raw[:])
}

// OfferChannelBinding offers SCRAM-SHA-256-PLUS (call it before
// Mechanisms) to a client connected over TLS: endPoint is the
// tls-server-end-point data of the certificate the proxy showed it
// (TLSServerEndPoint). Nil offers nothing.
func (s *SCRAMServer) OfferChannelBinding(endPoint []byte) {
	s.endPoint = clone(endPoint)
}

// Mechanisms returns the body of AuthenticationSASL: int32 10 and the
// mechanism list: SCRAM-SHA-256-PLUS (when offered) and SCRAM-SHA-256, in
// PostgreSQL's order.
func (s *SCRAMServer) Mechanisms() []byte {
	b := binary.BigEndian.AppendUint32(nil, authSASL)
	if s.endPoint != nil {
		b = append(append(b, SCRAMSHA256Plus...), 0)
	}
	b = append(b, SCRAMSHA256...)
	return append(b, 0, 0)
}

// SCRAMSHA256Plus is SCRAM-SHA-256 with channel binding.
const SCRAMSHA256Plus = SCRAMSHA256 + "-PLUS"

// cbindHeader is the GS2 header of a client that binds: authzid is not
// supported, so it is always this.
const cbindHeader = "p=tls-server-end-point,,"

// TLSServerEndPoint returns the tls-server-end-point channel binding data
// of cert (RFC 5929 §4.1): the hash of its DER encoding with the hash
// function of its signature algorithm, SHA-256 for MD5 and SHA-1. A
// signature algorithm with no such hash function (Ed25519, MD2) has none:
// PostgreSQL cannot bind to it either.
func TLSServerEndPoint(cert *x509.Certificate) ([]byte, error) {
	var h hash.Hash
	switch cert.SignatureAlgorithm {
	case x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1,
		x509.SHA256WithRSA, x509.SHA256WithRSAPSS, x509.ECDSAWithSHA256, x509.DSAWithSHA256:
		h = sha256.New()
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	default:
		return nil, fmt.Errorf("no tls-server-end-point hash for a certificate signed with %s", cert.SignatureAlgorithm)
	}
	h.Write(cert.Raw)
	return h.Sum(nil), nil
}

// ClientFirst takes the body of the client's SASLInitialResponse and
// returns the body of AuthenticationSASLContinue (int32 11 and the
// server-first-message). Errors are *pgerr.Error with PostgreSQL's codes
// and messages (08P01 malformed, 0A000 unsupported feature).
func (s *SCRAMServer) ClientFirst(body []byte) ([]byte, error) {
	if s.step != 0 {
		return nil, pgerr.New(pgerr.ProtocolViolation, "unexpected SASLInitialResponse")
	}
	s.step = 2 // until it succeeds: no second try
	mech, data, err := parseInitialResponse(body)
	if err != nil {
		return nil, err
	}
	switch {
	case mech == SCRAMSHA256Plus && s.endPoint != nil:
		s.plus = true
	case mech == SCRAMSHA256:
	default:
		return nil, pgerr.New(pgerr.ProtocolViolation, "client selected an invalid SASL authentication mechanism")
	}
	if err := s.readClientFirst(data); err != nil {
		return nil, err
	}
	s.serverFirst = "r=" + s.clientNonce + s.nonce + ",s=" + base64.StdEncoding.EncodeToString(s.sec.Salt) + ",i=" + strconv.Itoa(s.sec.Iterations)
	s.step = 1
	out := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(s.serverFirst)), authSASLContinue)
	return append(out, s.serverFirst...), nil
}

// parseInitialResponse splits a SASLInitialResponse body: mechanism name,
// int32 length (-1: no data), data.
func parseInitialResponse(body []byte) (string, []byte, error) {
	i := bytes.IndexByte(body, 0)
	if i < 0 {
		return "", nil, pgerr.New(pgerr.ProtocolViolation, "invalid string in message")
	}
	mech, rest := string(body[:i]), body[i+1:]
	if len(rest) < 4 {
		return "", nil, pgerr.New(pgerr.ProtocolViolation, "insufficient data left in message")
	}
	n := int32(binary.BigEndian.Uint32(rest))
	rest = rest[4:]
	if n == -1 {
		n = 0 // no initial response: the same as an empty one here
	}
	if n < 0 || int(n) != len(rest) {
		return "", nil, pgerr.New(pgerr.ProtocolViolation, "invalid message format")
	}
	return mech, rest, nil
}

// readClientFirst parses client-first-message (RFC 5802 §7):
//
//	gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]
func (s *SCRAMServer) readClientFirst(data []byte) error {
	if err := checkMessage(data); err != nil {
		return err
	}
	in := string(data)
	s.cbind = in[0]
	switch in[0] {
	case 'n', 'y':
		if s.plus {
			return malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data.")
		}
		if in[0] == 'y' && s.endPoint != nil {
			// The client could bind but thinks we cannot, and we offered
			// -PLUS: someone in between took it off the list.
			e := pgerr.New(pgerr.InvalidAuthorization, "SCRAM channel binding negotiation error")
			e.Detail = "The client supports SCRAM channel binding but thinks the server does not.  However, this server does support channel binding."
			e.Err = errors.New("GS2 flag \"y\" while SCRAM-SHA-256-PLUS was offered (downgrade)")
			return e
		}
		in = in[1:]
	case 'p':
		if !s.plus {
			return malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
		}
		typ, _, err := readAttr(in, 'p')
		if err != nil {
			return err
		}
		if typ != "tls-server-end-point" {
			return pgerr.New(pgerr.ProtocolViolation, "unsupported SCRAM channel-binding type \"%s\"", sanitizeStr(typ))
		}
		in = in[2+len(typ):]
	default:
		return malformed("Unexpected channel-binding flag %s.", sanitizeChar(in))
	}
	if in == "" || in[0] != ',' {
		return malformed("Comma expected, but found character %s.", sanitizeChar(in))
	}
	in = in[1:]
	if in != "" && in[0] == 'a' {
		return pgerr.New(pgerr.FeatureNotSupported, "client uses authorization identity, but it is not supported")
	}
	if in == "" || in[0] != ',' {
		return malformed("Unexpected attribute %s in client-first-message.", sanitizeChar(in))
	}
	in = in[1:]
	s.clientFirstBare = in
	if in != "" && in[0] == 'm' {
		return pgerr.New(pgerr.FeatureNotSupported, "client requires an unsupported SCRAM extension")
	}
	_, in, err := readAttr(in, 'n') // ignored: the startup packet's user counts
	if err != nil {
		return err
	}
	nonce, in, err := readAttr(in, 'r')
	if err != nil {
		return err
	}
	if nonce == "" || !printable(nonce) {
		return malformed("Non-printable characters in SCRAM nonce.")
	}
	for in != "" { // extensions: none supported, all ignored
		if _, _, in, err = readAnyAttr(in); err != nil {
			return err
		}
	}
	s.clientNonce = nonce
	return nil
}

// ClientFinal takes the body of the client's SASLResponse and returns the
// body of AuthenticationSASLFinal (int32 12 and "v=" ServerSignature). A
// wrong proof is a *pgerr.Error 28P01 wrapping ErrPasswordMismatch, found
// after the same work as a right one (the comparison is constant time); the
// client should then get that error, not the final message.
func (s *SCRAMServer) ClientFinal(body []byte) ([]byte, error) {
	if s.step != 1 {
		return nil, pgerr.New(pgerr.ProtocolViolation, "unexpected SASLResponse")
	}
	s.step = 2
	withoutProof, nonce, proof, err := s.readClientFinal(body)
	if err != nil {
		return nil, err
	}
	if nonce != s.clientNonce+s.nonce {
		e := pgerr.New(pgerr.ProtocolViolation, "invalid SCRAM response")
		e.Detail = "Nonce does not match."
		return nil, e
	}
	auth := s.authMessage(withoutProof)
	clientKey := xorBytes(proof, hmacSHA256(s.sec.StoredKey, auth))
	stored := sha256.Sum256(clientKey)
	match := subtle.ConstantTimeCompare(stored[:], s.sec.StoredKey) == 1
	serverSig := hmacSHA256(s.sec.ServerKey, auth)
	if !match || s.doomed != nil {
		wipe(clientKey)
		cause := ErrPasswordMismatch
		if s.doomed != nil {
			cause = s.doomed
		}
		return nil, passwordFailed(s.user, cause)
	}
	s.ok, s.clientKey = true, clientKey
	out := binary.BigEndian.AppendUint32(nil, authSASLFinal)
	out = append(out, "v="...)
	return base64.StdEncoding.AppendEncode(out, serverSig), nil
}

// readClientFinal parses client-final-message:
//
//	channel-binding "," nonce ["," extensions] "," proof
//
// and returns client-final-message-without-proof, the nonce and the proof.
func (s *SCRAMServer) readClientFinal(data []byte) (withoutProof, nonce string, proof []byte, err error) {
	if err := checkMessage(data); err != nil {
		return "", "", nil, err
	}
	full := string(data)
	cb, in, err := readAttr(full, 'c')
	if err != nil {
		return "", "", nil, err
	}
	if s.plus {
		// c= is the base64 of the GS2 header and the certificate's hash.
		want := base64.StdEncoding.EncodeToString(append([]byte(cbindHeader), s.endPoint...))
		if subtle.ConstantTimeCompare([]byte(cb), []byte(want)) != 1 {
			e := pgerr.New(pgerr.InvalidAuthorization, "SCRAM channel binding check failed")
			e.Err = errors.New("the client's channel binding data is not the hash of the proxy's certificate")
			return "", "", nil, e
		}
	} else if !(cb == "biws" && s.cbind == 'n') && !(cb == "eSws" && s.cbind == 'y') {
		// Without channel binding c= is the base64 of the GS2 header,
		// "n,," or "y,,", and must repeat the flag of client-first.
		return "", "", nil, pgerr.New(pgerr.ProtocolViolation, "unexpected SCRAM channel-binding attribute in client-final-message")
	}
	if nonce, in, err = readAttr(in, 'r'); err != nil {
		return "", "", nil, err
	}
	for {
		start := len(full) - len(in) - 1 // the comma before this attribute
		attr, value, rest, err := readAnyAttr(in)
		if err != nil {
			return "", "", nil, err
		}
		if attr != 'p' {
			in = rest
			continue
		}
		proof, err := base64.StdEncoding.Strict().DecodeString(value)
		if err != nil || len(proof) != keyLen {
			return "", "", nil, malformed("Malformed proof in client-final-message.")
		}
		if len(full) > start+3+len(value) { // a comma, and maybe more, after the proof
			return "", "", nil, malformed("Garbage found at the end of client-final-message.")
		}
		return full[:start], nonce, proof, nil
	}
}

func (s *SCRAMServer) authMessage(clientFinalWithoutProof string) []byte {
	b := make([]byte, 0, len(s.clientFirstBare)+len(s.serverFirst)+len(clientFinalWithoutProof)+2)
	b = append(b, s.clientFirstBare...)
	b = append(b, ',')
	b = append(b, s.serverFirst...)
	b = append(b, ',')
	return append(b, clientFinalWithoutProof...)
}

// Credential returns what the proxy can log in to backends with after a
// successful exchange: the verifier and the ClientKey recovered from the
// client's proof (for a plaintext user, the plaintext; the ClientKey of a
// derived verifier is of no use to a backend). Before success, or after a
// failure, it has no secret (CanLogin is false). Each call returns fresh
// copies of the key material.
func (s *SCRAMServer) Credential() Credential {
	if !s.ok {
		return Credential{User: s.user}
	}
	if s.plain {
		return Credential{User: s.user, Secret: cloneSecret(s.sec)}
	}
	return Credential{User: s.user, Secret: cloneSecret(s.sec), ClientKey: clone(s.clientKey)}
}

// Zero wipes the exchange's copy of the ClientKey (Credentials already
// returned are not affected).
func (s *SCRAMServer) Zero() {
	wipe(s.clientKey)
	s.clientKey, s.ok = nil, false
}
