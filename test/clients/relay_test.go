package clients

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// Pre-startup request codes (protocol.html, "Message Formats").
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
	codeProtocol30    = 196608
)

// recorder is a TCP relay in front of the proxy that records the request
// codes each client connection sends before its StartupMessage (SSLRequest,
// GSSENCRequest) and the StartupMessage's protocol version, so a test can
// show which negotiation a client really performed.
type recorder struct {
	ln     net.Listener
	to     string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	codes  [][]uint32 // per accepted connection, in accept order
	// closeOnGSS makes the relay behave like a broken proxy: it closes the
	// connection on a GSSENCRequest instead of passing it on.
	closeOnGSS bool
}

func newRecorder(t *testing.T, to string) *recorder { return startRecorder(t, to, false) }

// startRecorder is newRecorder; closeOnGSS as in recorder.
func startRecorder(t *testing.T, to string, closeOnGSS bool) *recorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{ln: ln, to: to, conns: map[net.Conn]bool{}, closeOnGSS: closeOnGSS}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(r.close)
	return r
}

func (r *recorder) Addr() string { return r.ln.Addr().String() }

// Codes returns a copy of what each connection sent before the startup
// message (and the startup code itself).
func (r *recorder) Codes() [][]uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]uint32, len(r.codes))
	for i, c := range r.codes {
		out[i] = append([]uint32(nil), c...)
	}
	return out
}

func (r *recorder) close() {
	_ = r.ln.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *recorder) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.conns[c] = true
	return true
}

func (r *recorder) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		idx := len(r.codes)
		r.codes = append(r.codes, nil)
		r.mu.Unlock()
		r.wg.Add(1)
		go r.serve(c, idx)
	}
}

func (r *recorder) serve(c net.Conn, idx int) {
	defer r.wg.Done()
	defer c.Close()
	up, err := net.Dial("tcp", r.to)
	if err != nil {
		return
	}
	defer up.Close()
	if !r.track(c) || !r.track(up) {
		return
	}
	done := make(chan struct{})
	go func() { // proxy → client; owned: serve waits for it
		defer close(done)
		_, _ = io.Copy(c, up)
		_ = c.Close()
	}()
	r.relayClient(c, up, idx)
	_ = up.Close()
	<-done
	r.mu.Lock()
	delete(r.conns, c)
	delete(r.conns, up)
	r.mu.Unlock()
}

// relayClient copies client → proxy, recording the 8-byte requests before
// the startup packet and the startup packet's code. A TLS record (first byte
// 0x16, after an accepted SSLRequest or direct TLS) ends the recording.
func (r *recorder) relayClient(c, up net.Conn, idx int) {
	for {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return
		}
		if first[0] == 0x16 {
			r.add(idx, 0x16)
			if _, err := up.Write(first[:]); err != nil {
				return
			}
			break
		}
		var rest [7]byte
		if _, err := io.ReadFull(c, rest[:]); err != nil {
			return
		}
		head := append(first[:], rest[:]...)
		code := binary.BigEndian.Uint32(head[4:8])
		r.add(idx, code)
		if code == codeGSSENCRequest && r.closeOnGSS {
			return
		}
		if _, err := up.Write(head); err != nil {
			return
		}
		if n := binary.BigEndian.Uint32(head[0:4]); n != 8 || (code != codeSSLRequest && code != codeGSSENCRequest) {
			break // the startup (or cancel) packet: the rest is copied as is
		}
	}
	_, _ = io.Copy(up, c)
}

func (r *recorder) add(idx int, code uint32) {
	r.mu.Lock()
	r.codes[idx] = append(r.codes[idx], code)
	r.mu.Unlock()
}
