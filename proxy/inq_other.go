//go:build !linux

package proxy

// Without TCP_INQ the relay reads until EAGAIN before every park.
type inqReader struct{}

func enableInq(fd uintptr) bool { return false }

func (r *inqReader) read(fd uintptr, b []byte) (int, int, error) {
	n, err := rawRead(fd, b)
	return n, -1, err
}
