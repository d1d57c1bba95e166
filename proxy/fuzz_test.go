package proxy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/ofitec/pgproxy/internal/pgwire"
)

// chunkReader returns data in chunks whose sizes come from sizes (cycled).
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(r.sizes) > 0 {
		n = int(r.sizes[r.i%len(r.sizes)])%64 + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

func message(typ byte, body string) []byte {
	return pgwire.AppendMessage(nil, typ, []byte(body))
}

// FuzzRelayFraming feeds arbitrary byte streams, cut into arbitrary reads,
// through both relay directions. Whatever arrives, the pump never panics,
// and what it forwards is exactly what it read, up to the point where it
// stops on a protocol violation.
func FuzzRelayFraming(f *testing.F) {
	f.Add(bytes.Join([][]byte{message('Q', "SELECT 1\x00"), message('P', "s\x00SELECT $1\x00\x00\x00"), message('S', ""), message('X', "")}, nil), []byte{3, 1, 7}, true)
	f.Add(bytes.Join([][]byte{message('T', "\x00\x01a\x00"), message('D', "\x00\x01\x00\x00\x00\x01x"), message('C', "SELECT 1\x00"), message('Z', "I"), message('S', "application_name\x00x\x00")}, nil), []byte{1}, false)
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff}, []byte{2}, true)
	f.Fuzz(func(t *testing.T, stream, sizes []byte, toServer bool) {
		s := &session{cfg: &Config{}}
		var out bytes.Buffer
		var count = new(int64Counter)
		p := newPump(s, toServer, &chunkReader{data: stream, sizes: sizes}, &out, &count.v)
		s.client = discardConn{}
		err := p.run()
		var re *relayEnd
		if !errors.As(err, &re) {
			t.Fatalf("unexpected end: %v", err)
		}
		if !bytes.HasPrefix(stream, out.Bytes()) {
			t.Fatalf("forwarded bytes are not a prefix of the input")
		}
		if re.reason != "protocol_violation" && out.Len() != len(stream) {
			// Everything read must be forwarded except a trailing partial header.
			if len(stream)-out.Len() >= 5 {
				t.Fatalf("forwarded %d of %d bytes without a violation", out.Len(), len(stream))
			}
		}
	})
}

// FuzzReadOnlyHold runs enforced read-only sessions (both directions, with a
// checker that refuses everything containing "off") against a fake server
// that answers each message as PostgreSQL would when nothing fails. Whatever
// the client sends, cut into any reads: no Query or Parse whose SQL the
// checker refuses reaches the server, whole or in part, and the relay never
// hangs waiting for an answer it will not get.
func FuzzReadOnlyHold(f *testing.F) {
	f.Add(bytes.Join([][]byte{message('Q', "SET x = off\x00"), message('P', "s1\x00SELECT off\x00\x00\x00"), message('B', "\x00s1\x00\x00\x00\x00\x01\x00\x00\x00\x01x\x00\x00"), message('F', "\x00\x00\x00\xb1\x00\x00\x00\x00\x00\x00"), message('S', "")}, nil), []byte{5, 9})
	f.Add(bytes.Join([][]byte{message('Q', "SELECT 1\x00"), message('Q', "SELECT off\x00"), message('Q', "SELECT 2\x00"), message('P', "\x00SELECT 3\x00\x00\x00"), message('B', "\x00\x00\x00\x00\x00\x00\x00\x00"), message('E', "\x00\x00\x00\x00\x00"), message('P', "\x00SELECT off\x00\x00\x00"), message('B', "\x00\x00\x00\x00\x00\x00\x00\x00"), message('H', ""), message('S', ""), message('Q', "BEGIN\x00"), message('Q', "off\x00"), message('Q', "COMMIT\x00")}, nil), []byte{64})
	f.Fuzz(func(t *testing.T, stream, sizes []byte) {
		s := &session{cfg: &Config{ReadOnlyCheck: func(sql string) (string, bool, error) {
			return "off", bytes.Contains([]byte(sql), []byte("off")), nil
		}}, readOnly: true}
		s.logp.Store(nopLogger())
		s.client = discardConn{}
		srvIn, proxyOut := net.Pipe()
		proxyIn, srvOut := net.Pipe()
		in, out := new(int64Counter), new(int64Counter)
		c2s := newPump(s, true, &chunkReader{data: stream, sizes: sizes}, proxyOut, &in.v)
		s2c := newPump(s, false, proxyIn, discardConn{}, &out.v)
		received := make(chan []byte, 1)
		go func() { received <- fakeAnswers(srvIn, srvOut) }()
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = s2c.run()
			s.guard.end()
		}()
		ended := make(chan []byte)
		go func() {
			_ = c2s.run()
			proxyOut.Close()
			b := <-received
			<-done
			ended <- b
		}()
		var b []byte
		select {
		case b = <-ended:
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("the relay hangs on %q\n%s", stream, buf[:runtime.Stack(buf, true)])
		}
		for len(b) >= 5 {
			typ, n := b[0], int(binary.BigEndian.Uint32(b[1:5]))
			body := b[5:min(len(b), 1+max(n, 4))]
			if typ == 'Q' || typ == 'P' {
				sql := body // what the server runs: the query string up to its NUL
				if typ == 'P' {
					if i := bytes.IndexByte(sql, 0); i >= 0 {
						sql = sql[i+1:] // after the statement name
					}
				}
				if i := bytes.IndexByte(sql, 0); i >= 0 {
					sql = sql[:i]
				}
				if bytes.Contains(sql, []byte("off")) {
					t.Fatalf("a refused statement was forwarded: %q", sql)
				}
			}
			b = b[min(len(b), 1+max(n, 4)):]
		}
	})
}

// fakeAnswers reads frontend messages from in until it ends and answers them
// on out as a server in which nothing fails (ParseComplete, BindComplete,
// NoData, CommandComplete, CloseComplete, ReadyForQuery 'I'); it returns the
// bytes it read.
func fakeAnswers(in, out net.Conn) []byte {
	defer out.Close()
	var got bytes.Buffer
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(in, hdr[:]); err != nil {
			return got.Bytes()
		}
		got.Write(hdr[:])
		n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
		if n < 0 {
			return got.Bytes()
		}
		if _, err := io.CopyN(&got, in, n); err != nil {
			return got.Bytes()
		}
		var ans []byte
		switch hdr[0] {
		case 'P':
			ans = message('1', "")
		case 'B':
			ans = message('2', "")
		case 'D':
			ans = message('n', "")
		case 'E':
			ans = message('C', "SELECT 0\x00")
		case 'C':
			ans = message('3', "")
		case 'Q':
			ans = append(message('C', "SELECT 0\x00"), message('Z', "I")...)
		case 'S':
			ans = message('Z', "I")
		}
		if len(ans) > 0 {
			if _, err := out.Write(ans); err != nil {
				go io.Copy(io.Discard, in) //nolint:errcheck // keep the proxy's writes flowing until it closes
				return got.Bytes()
			}
		}
	}
}
