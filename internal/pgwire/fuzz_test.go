package pgwire

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func FuzzParseStartupPacket(f *testing.F) {
	f.Add(binary.BigEndian.AppendUint32(nil, SSLRequestCode))
	f.Add(binary.BigEndian.AppendUint32(nil, GSSENCRequestCode))
	f.Add(append(binary.BigEndian.AppendUint32(nil, CancelRequestCode), 0, 0, 0, 1, 9, 9, 9, 9))
	f.Add(append(binary.BigEndian.AppendUint32(nil, ProtocolVersion30), "user\x00u\x00database\x00d\x00\x00"...))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 3<<16|2), "user\x00u\x00_pq_.x\x00y\x00\x00"...))
	f.Add([]byte{0, 3, 0, 0, 'u', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseStartupPacket(b)
		if err != nil {
			return
		}
		if p.Kind == KindStartup {
			// A decoded startup packet re-encodes to the same bytes.
			enc := EncodeStartup(nil, p.Params)
			if p.Version == ProtocolVersion30 && !bytes.Equal(enc[4:], b) {
				t.Fatalf("round trip: %q → %q", b, enc[4:])
			}
			if u, _ := p.Get("user"); u == "" {
				t.Fatal("accepted a startup packet without user")
			}
		}
	})
}

func FuzzReadStartupPacket(f *testing.F) {
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = ReadStartupPacket(bytes.NewReader(b))
	})
}
