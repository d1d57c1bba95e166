package proxy

import (
	"syscall"
	"unsafe"
)

// tcpInq is TCP_INQ (Linux 4.18): with it set, recvmsg(2) reports in a
// TCP_CM_INQ control message how many bytes are still queued on the socket
// after the read, and 1 when none are but the peer's FIN has arrived (so the
// reader reads once more and gets end of file).
const tcpInq = 0x24

// cmsgData is the offset of a control message's data (CMSG_ALIGN of the
// header).
const cmsgData = (syscall.SizeofCmsghdr + 7) &^ 7

// inqReader reads a TCP socket with recvmsg(2) and TCP_INQ. Its buffers are
// part of the pump, so a read allocates nothing.
type inqReader struct {
	msg  syscall.Msghdr
	iov  syscall.Iovec
	ctrl [4]uint64 // one TCP_CM_INQ control message; uint64 for its alignment
}

// enableInq turns TCP_INQ on for fd; false when the kernel refuses it.
func enableInq(fd uintptr) bool {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_TCP, tcpInq, 1) == nil
}

// read is recvmsg(2) into b, retried on EINTR. inq is the number of bytes
// left on the socket (1 if only the FIN is), or -1 when the kernel did not
// say.
func (r *inqReader) read(fd uintptr, b []byte) (n, inq int, err error) {
	r.iov.Base = &b[0]
	r.iov.SetLen(len(b))
	r.msg.Iov = &r.iov
	r.msg.Iovlen = 1
	r.msg.Control = (*byte)(unsafe.Pointer(&r.ctrl[0]))
	r.msg.SetControllen(int(unsafe.Sizeof(r.ctrl)))
	r.msg.Flags = 0
	for {
		m, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, -1, e
		}
		inq = -1
		if r.msg.Controllen >= cmsgData+4 {
			h := (*syscall.Cmsghdr)(unsafe.Pointer(&r.ctrl[0]))
			if h.Level == syscall.SOL_TCP && h.Type == tcpInq && h.Len >= cmsgData+4 {
				inq = int(*(*int32)(unsafe.Add(unsafe.Pointer(&r.ctrl[0]), cmsgData)))
			}
		}
		return int(m), inq, nil
	}
}
