package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// Startup packet codes (the "protocol version" field of the first packet).
const (
	codeProtocol30    = 3<<16 | 0
	codeCancelRequest = 1234<<16 | 5678
	codeSSLRequest    = 1234<<16 | 5679
	codeGSSENCRequest = 1234<<16 | 5680

	// maxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	maxStartupPacket = 10000
	// maxCancelKey is the longest cancel key of protocol 3.2.
	maxCancelKey = 256
)

type startupKind int

const (
	kindStartup startupKind = iota
	kindSSLRequest
	kindGSSENCRequest
	kindCancel
)

// param is one startup parameter; order is kept so the backend sees the
// client's packet unchanged apart from what the proxy consumes.
type param struct{ key, value string }

// startupPacket is a decoded first packet of a connection.
type startupPacket struct {
	kind startupKind
	// protocol version of a StartupMessage (major<<16 | minor).
	version uint32
	params  []param
	// CancelRequest fields.
	cancelPID uint32
	cancelKey []byte
}

func (p *startupPacket) get(key string) (string, bool) {
	for _, kv := range p.params {
		if kv.key == key {
			return kv.value, true
		}
	}
	return "", false
}

// paramMap returns the parameters as a map (the Director's input).
func (p *startupPacket) paramMap() map[string]string {
	m := make(map[string]string, len(p.params))
	for _, kv := range p.params {
		m[kv.key] = kv.value
	}
	return m
}

// readStartupPacket reads one length-prefixed startup-phase packet straight
// off r, without read-ahead: after an SSLRequest nothing beyond the 8 bytes
// may have been consumed (CVE-2021-23214 style injection). The length is
// checked before anything is allocated.
func readStartupPacket(r io.Reader) (*startupPacket, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 8 || n > maxStartupPacket {
		return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return parseStartupPacket(body)
}

// parseStartupPacket decodes a startup-phase packet without its length word.
func parseStartupPacket(b []byte) (*startupPacket, error) {
	if len(b) < 4 {
		return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
	}
	code := binary.BigEndian.Uint32(b)
	rest := b[4:]
	switch code {
	case codeSSLRequest, codeGSSENCRequest:
		if len(rest) != 0 {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
		}
		if code == codeSSLRequest {
			return &startupPacket{kind: kindSSLRequest}, nil
		}
		return &startupPacket{kind: kindGSSENCRequest}, nil
	case codeCancelRequest:
		if len(rest) < 8 || len(rest)-4 > maxCancelKey {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of cancel request packet")
		}
		return &startupPacket{kind: kindCancel, cancelPID: binary.BigEndian.Uint32(rest), cancelKey: append([]byte(nil), rest[4:]...)}, nil
	}
	if code>>16 != 3 {
		return nil, pgerr.New(pgerr.FeatureNotSupported, "unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff)
	}
	p := &startupPacket{kind: kindStartup, version: code}
	for len(rest) > 0 {
		if rest[0] == 0 {
			if len(rest) != 1 {
				return nil, pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
			}
			return p, p.validate()
		}
		k := bytes.IndexByte(rest, 0)
		if k < 0 {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		key := string(rest[:k])
		rest = rest[k+1:]
		v := bytes.IndexByte(rest, 0)
		if v < 0 {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
		}
		p.params = append(p.params, param{key, string(rest[:v])})
		rest = rest[v+1:]
	}
	return nil, pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
}

func (p *startupPacket) validate() error {
	seen := make(map[string]bool, len(p.params))
	for _, kv := range p.params {
		if kv.key == "" {
			return pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: empty parameter name")
		}
		if seen[kv.key] {
			return pgerr.New(pgerr.ProtocolViolation, "duplicate startup parameter %q", kv.key)
		}
		seen[kv.key] = true
	}
	if u, _ := p.get("user"); u == "" {
		return pgerr.New(pgerr.InvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	return nil
}

// negotiation returns what a NegotiateProtocolVersion must report for this
// packet (newer minor version or _pq_.* options), and strips the _pq_
// options so the backend sees a plain 3.0 startup. ok is false when no
// negotiation message is needed.
func (p *startupPacket) negotiation() (unrecognized []string, ok bool) {
	kept := p.params[:0]
	for _, kv := range p.params {
		if strings.HasPrefix(kv.key, "_pq_.") {
			unrecognized = append(unrecognized, kv.key)
			continue
		}
		kept = append(kept, kv)
	}
	p.params = kept
	need := p.version != codeProtocol30 || len(unrecognized) > 0
	p.version = codeProtocol30
	return unrecognized, need
}

// encodeStartup appends a StartupMessage (3.0) with params to dst.
func encodeStartup(dst []byte, params []param) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, codeProtocol30)
	for _, kv := range params {
		dst = append(dst, kv.key...)
		dst = append(dst, 0)
		dst = append(dst, kv.value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// encodeCancel appends a CancelRequest packet.
func encodeCancel(dst []byte, pid uint32, key []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(key)))
	dst = binary.BigEndian.AppendUint32(dst, codeCancelRequest)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return append(dst, key...)
}

var errClientGone = errors.New("client closed the connection")

func describeStartupErr(err error) string {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "client closed during startup"
	}
	return fmt.Sprint(err)
}
