package pgauth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

func testCert(t *testing.T, pub, priv any) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSServerEndPoint(t *testing.T) {
	k256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	c256, c384 := testCert(t, &k256.PublicKey, k256), testCert(t, &k384.PublicKey, k384)
	h256, h384 := sha256.Sum256(c256.Raw), sha512.Sum384(c384.Raw)
	if got, err := TLSServerEndPoint(c256); err != nil || !bytes.Equal(got, h256[:]) {
		t.Fatalf("%s: %x, %v", c256.SignatureAlgorithm, got, err)
	}
	if got, err := TLSServerEndPoint(c384); err != nil || !bytes.Equal(got, h384[:]) {
		t.Fatalf("%s: %x, %v", c384.SignatureAlgorithm, got, err)
	}
	// SHA-1 (and MD5) signatures: SHA-256 (RFC 5929 §4.1).
	sha1 := *c256
	sha1.SignatureAlgorithm = x509.SHA1WithRSA
	if got, _ := TLSServerEndPoint(&sha1); !bytes.Equal(got, h256[:]) {
		t.Fatalf("SHA1WithRSA: %x, want SHA-256", got)
	}
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	if got, err := TLSServerEndPoint(testCert(t, pub, priv)); err == nil {
		t.Fatalf("Ed25519: %x, want an error", got)
	}
}

// plusExchange runs SCRAM-SHA-256-PLUS against s, binding to endPoint.
func plusExchange(t *testing.T, s *SCRAMServer, password string, endPoint []byte) ([]byte, error) {
	t.Helper()
	const header = "p=tls-server-end-point,,"
	bare := "n=,r=clientnonce"
	cont, err := s.ClientFirst(initialResponse("SCRAM-SHA-256-PLUS", header+bare))
	if err != nil {
		return nil, err
	}
	serverFirst := string(cont[4:])
	attrs := strings.Split(serverFirst, ",")
	salt, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(attrs[1], "s="))
	clientKey, storedKey, _ := scramKeys(password, salt, 4096)
	withoutProof := "c=" + base64.StdEncoding.EncodeToString(append([]byte(header), endPoint...)) + "," + attrs[0]
	auth := []byte(bare + "," + serverFirst + "," + withoutProof)
	proof := xorBytes(clientKey, hmacSHA256(storedKey, auth))
	return s.ClientFinal([]byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)))
}

func TestSCRAMServerChannelBinding(t *testing.T) {
	endPoint := bytes.Repeat([]byte{7}, 32)
	plus := func() *SCRAMServer {
		s := newSCRAMServer("user", rfcSecret(t), "SNONCE")
		s.OfferChannelBinding(endPoint)
		return s
	}
	if got, want := plus().Mechanisms(), authBody(10, "SCRAM-SHA-256-PLUS\x00SCRAM-SHA-256\x00\x00"); !bytes.Equal(got, want) {
		t.Fatalf("Mechanisms = %q, want %q", got, want)
	}
	s := plus()
	if _, err := plusExchange(t, s, "pencil", endPoint); err != nil {
		t.Fatalf("bound to the right certificate: %v", err)
	}
	if c := s.Credential(); !c.CanLogin() {
		t.Fatal("no credential after a bound exchange")
	}
	if _, err := plusExchange(t, plus(), "not pencil", endPoint); !errors.Is(err, ErrPasswordMismatch) {
		t.Fatalf("wrong password, right binding: %v", err)
	}
	other := bytes.Repeat([]byte{8}, 32)
	for name, tc := range map[string]struct {
		run        func() error
		code, want string
	}{
		"another certificate": {func() error { _, err := plusExchange(t, plus(), "pencil", other); return err }, "28000", "SCRAM channel binding check failed"},
		"no binding offered": {func() error {
			_, err := plusExchange(t, newSCRAMServer("user", rfcSecret(t), "SNONCE"), "pencil", endPoint)
			return err
		}, "08P01", "invalid SASL authentication mechanism"},
		"y while -PLUS offered (downgrade)": {func() error {
			_, err := plus().ClientFirst(initialResponse("SCRAM-SHA-256", "y,,n=,r=abc"))
			return err
		}, "28000", "SCRAM channel binding negotiation error"},
		"-PLUS without binding data": {func() error {
			_, err := plus().ClientFirst(initialResponse("SCRAM-SHA-256-PLUS", "n,,n=,r=abc"))
			return err
		}, "08P01", "The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include channel binding data."},
		"binding data without -PLUS": {func() error {
			_, err := plus().ClientFirst(initialResponse("SCRAM-SHA-256", "p=tls-server-end-point,,n=,r=abc"))
			return err
		}, "08P01", "includes channel binding data"},
		"another binding type": {func() error {
			_, err := plus().ClientFirst(initialResponse("SCRAM-SHA-256-PLUS", "p=tls-unique,,n=,r=abc"))
			return err
		}, "08P01", `unsupported SCRAM channel-binding type "tls-unique"`},
		"-PLUS with biws": {func() error {
			s := plus()
			if _, err := s.ClientFirst(initialResponse("SCRAM-SHA-256-PLUS", "p=tls-server-end-point,,n=,r=abc")); err != nil {
				return err
			}
			_, err := s.ClientFinal([]byte("c=biws,r=abcSNONCE,p=" + strings.Repeat("A", 43) + "="))
			return err
		}, "28000", "SCRAM channel binding check failed"},
	} {
		err := tc.run()
		var pe *pgerr.Error
		if !errors.As(err, &pe) || pe.Code != tc.code || !strings.Contains(pe.Message+" "+pe.Detail, tc.want) {
			t.Errorf("%s: err = %v (detail %q), want %s containing %q", name, err, detail(err), tc.code, tc.want)
		}
	}
	// Without TLS nothing changes: "y" is no downgrade.
	if _, err := newSCRAMServer("user", rfcSecret(t), "S").ClientFirst(initialResponse("SCRAM-SHA-256", "y,,n=,r=abc")); err != nil {
		t.Fatalf("y without -PLUS offered: %v", err)
	}
}
