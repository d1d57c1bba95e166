package proxy

import (
	"os"
	"sync"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Idle pooled clients hold no goroutine. A transaction-mode client between
// transactions holds no server either, so what it costs is its session's
// state alone, as in PgBouncer, once its goroutine and that goroutine's
// stack (8 KiB, most of what an idle client cost) are gone.
//
// How: when the server→client relay gives a transaction's server back, it
// arms the client socket's read deadline parkAfter ahead. The client→server
// pump, waiting for the client's next message, wakes at that deadline; if
// the session is still between transactions (no server, nothing half read)
// the session's goroutine unwinds, and its very last act is to hand the
// client socket to the parker (Server.park). The parker is one goroutine
// with an epoll set of parked client sockets (level-triggered, one shot):
// when one becomes readable (a message, a FIN, an RST) it takes it out of
// the set and starts a goroutine that resumes the session where it stopped
// (session.resume). A client that is busy never parks (each of its
// transactions costs one deadline update, no system call), and a client
// idle for a while costs one epoll_ctl to park and one to wake.
//
// Ownership: a parked session belongs to the parker until it is taken out
// of the set (by its event or by wake, under parker.mu); whoever takes it
// starts its goroutine. Nothing else touches a parked session's relay. Its
// socket stays open while parked (only the session's own goroutine closes
// it), so the descriptor the set holds is the session's. Server.Shutdown
// counts a parked session as open (sessWG): terminate wakes it, and the
// resumed session ends as any other does. The parker's epoll descriptor is
// registered with Go's poller, like an event loop's (evloop_linux.go).
//
// Not parked: sessions in session mode (their server is theirs), TLS
// clients (their reads go through crypto/tls), enforced read-only
// sessions, and other systems (park_other.go).

const parkEvents = 64

type parker struct {
	log  *zap.Logger
	epfd int
	efd  int // eventfd: close
	file *os.File
	rc   syscall.RawConn

	mu        sync.Mutex
	byFd      map[int32]*session
	stop      bool
	stopped   bool
	closeOnce sync.Once
	done      chan struct{}

	events [parkEvents]unix.EpollEvent // the parker goroutine's
}

func newParker(log *zap.Logger) (*parker, error) {
	epfd, efd, f, rc, err := pollableEpoll("pgproxy-parker", unix.EPOLLIN)
	if err != nil {
		return nil, err
	}
	p := &parker{log: log, epfd: epfd, efd: efd, file: f, rc: rc, byFd: make(map[int32]*session), done: make(chan struct{})}
	go p.run()
	return p, nil
}

func (p *parker) run() {
	defer close(p.done)
	if err := p.rc.Read(p.poll); err != nil {
		p.log.Error("idle client parker stopped", zap.Error(err))
	}
	// Whatever is still parked is resumed: its goroutine relays it again.
	p.mu.Lock()
	p.stopped = true
	left := make([]*session, 0, len(p.byFd))
	for fd, s := range p.byFd {
		s.parkedFd = -1
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
		left = append(left, s)
	}
	clear(p.byFd)
	p.mu.Unlock()
	for _, s := range left {
		s.srv.workers.run(s.resume)
	}
}

// poll takes the ready events and resumes their sessions; false parks the
// goroutine on Go's poller until the epoll descriptor is readable again.
func (p *parker) poll(uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(p.epfd),
			uintptr(unsafe.Pointer(&p.events[0])), parkEvents, 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			p.log.Error("idle client parker: epoll_pwait", zap.Error(e))
			return true
		}
		for i := range int(n) {
			fd := p.events[i].Fd
			if int(fd) == p.efd {
				p.mu.Lock()
				stop := p.stop
				p.mu.Unlock()
				if stop {
					return true
				}
				continue
			}
			p.mu.Lock()
			s := p.byFd[fd]
			if s != nil {
				delete(p.byFd, fd)
				s.parkedFd = -1
				_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
			}
			p.mu.Unlock()
			if s != nil {
				s.srv.workers.run(s.resume)
			}
		}
		if n < parkEvents {
			return false
		}
	}
}

// park adds s's client socket (fd) to the set; false when s is not parked
// (the parker stops, s is being terminated, epoll_ctl failed): the caller
// goes on relaying it. After true the caller must not touch s again.
func (p *parker) park(s *session, fd int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stop || p.stopped || s.terminating.Load() != nil {
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(fd)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return false
	}
	p.byFd[int32(fd)] = s
	s.parkedFd = int32(fd)
	return true
}

// wake resumes s now if it is parked; false when it is not.
func (p *parker) wake(s *session) bool {
	p.mu.Lock()
	fd := s.parkedFd
	if fd < 0 || p.byFd[fd] != s {
		p.mu.Unlock()
		return false
	}
	delete(p.byFd, fd)
	s.parkedFd = -1
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	p.mu.Unlock()
	s.srv.workers.run(s.resume)
	return true
}

// parked is how many sessions are parked now.
func (p *parker) parked() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.byFd)
}

// close stops the parker (resuming whatever is parked), waits for its
// goroutine and closes its descriptors.
func (p *parker) close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.stop = true
		one := uint64(1)
		_, _ = unix.Write(p.efd, (*[8]byte)(unsafe.Pointer(&one))[:])
		p.mu.Unlock()
		<-p.done
		p.file.Close()
		unix.Close(p.efd)
	})
}
