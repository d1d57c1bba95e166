package pgwire

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"

	"github.com/ofitec/pgproxy/internal/pgerr"
)

// Startup packet codes (the "protocol version" field of the first packet).
const (
	ProtocolVersion30 = 3<<16 | 0
	CancelRequestCode = 1234<<16 | 5678
	SSLRequestCode    = 1234<<16 | 5679
	GSSENCRequestCode = 1234<<16 | 5680

	// MaxStartupPacket is PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
	MaxStartupPacket = 10000
	// MaxCancelKey is the longest cancel key of protocol 3.2.
	MaxCancelKey = 256
)

type StartupKind int

const (
	KindStartup StartupKind = iota
	KindSSLRequest
	KindGSSENCRequest
	KindCancel
)

// Param is one startup parameter; order is kept so the backend sees the
// client's packet unchanged apart from what the proxy consumes.
type Param struct{ Key, Value string }

// StartupPacket is a decoded first packet of a connection.
type StartupPacket struct {
	Kind StartupKind
	// Version is the protocol version of a StartupMessage (major<<16 | minor).
	Version uint32
	Params  []Param
	// CancelRequest fields.
	CancelPID uint32
	CancelKey []byte
}

func (p *StartupPacket) Get(key string) (string, bool) {
	for _, kv := range p.Params {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// ReadStartupPacket reads one length-prefixed startup-phase packet straight
// off r, without read-ahead: after an SSLRequest nothing beyond the 8 bytes
// may have been consumed (CVE-2021-23214 style injection). The length is
// checked before anything is allocated.
func ReadStartupPacket(r io.Reader) (*StartupPacket, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:4]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 8 || n > MaxStartupPacket {
		return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
	}
	body := make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return ParseStartupPacket(body)
}

// ParseStartupPacket decodes a startup-phase packet without its length word.
func ParseStartupPacket(b []byte) (*StartupPacket, error) {
	if len(b) < 4 {
		return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
	}
	code := binary.BigEndian.Uint32(b)
	rest := b[4:]
	switch code {
	case SSLRequestCode, GSSENCRequestCode:
		if len(rest) != 0 {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of startup packet")
		}
		if code == SSLRequestCode {
			return &StartupPacket{Kind: KindSSLRequest}, nil
		}
		return &StartupPacket{Kind: KindGSSENCRequest}, nil
	case CancelRequestCode:
		if len(rest) < 8 || len(rest)-4 > MaxCancelKey {
			return nil, pgerr.New(pgerr.ProtocolViolation, "invalid length of cancel request packet")
		}
		return &StartupPacket{Kind: KindCancel, CancelPID: binary.BigEndian.Uint32(rest), CancelKey: append([]byte(nil), rest[4:]...)}, nil
	}
	if code>>16 != 3 {
		return nil, pgerr.New(pgerr.FeatureNotSupported, "unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", code>>16, code&0xffff)
	}
	p := &StartupPacket{Kind: KindStartup, Version: code}
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
		p.Params = append(p.Params, Param{key, string(rest[:v])})
		rest = rest[v+1:]
	}
	return nil, pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")
}

func (p *StartupPacket) validate() error {
	seen := make(map[string]bool, len(p.Params))
	for _, kv := range p.Params {
		if kv.Key == "" {
			return pgerr.New(pgerr.ProtocolViolation, "invalid startup packet layout: empty parameter name")
		}
		if seen[kv.Key] {
			return pgerr.New(pgerr.ProtocolViolation, "duplicate startup parameter %q", kv.Key)
		}
		seen[kv.Key] = true
	}
	if u, _ := p.Get("user"); u == "" {
		return pgerr.New(pgerr.InvalidAuthorization, "no PostgreSQL user name specified in startup packet")
	}
	return nil
}

// Negotiation returns what a NegotiateProtocolVersion must report for this
// packet (newer minor version or _pq_.* options), and strips the _pq_
// options so the backend sees a plain 3.0 startup. ok is false when no
// negotiation message is needed.
func (p *StartupPacket) Negotiation() (unrecognized []string, ok bool) {
	kept := p.Params[:0]
	for _, kv := range p.Params {
		if strings.HasPrefix(kv.Key, "_pq_.") {
			unrecognized = append(unrecognized, kv.Key)
			continue
		}
		kept = append(kept, kv)
	}
	p.Params = kept
	need := p.Version != ProtocolVersion30 || len(unrecognized) > 0
	p.Version = ProtocolVersion30
	return unrecognized, need
}

// EncodeStartup appends a StartupMessage (3.0) with params to dst.
func EncodeStartup(dst []byte, params []Param) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, ProtocolVersion30)
	for _, kv := range params {
		dst = append(dst, kv.Key...)
		dst = append(dst, 0)
		dst = append(dst, kv.Value...)
		dst = append(dst, 0)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start))
	return dst
}

// EncodeCancel appends a CancelRequest packet.
func EncodeCancel(dst []byte, pid uint32, key []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(12+len(key)))
	dst = binary.BigEndian.AppendUint32(dst, CancelRequestCode)
	dst = binary.BigEndian.AppendUint32(dst, pid)
	return append(dst, key...)
}
