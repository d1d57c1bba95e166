//go:build !linux

package proxy

import (
	"errors"

	"go.uber.org/zap"
)

// Event loops are Linux-only (epoll); elsewhere every session is relayed by
// a goroutine per direction.

type evLoop struct{}

type loopRelay struct{ loop *evLoop }

type loopReq struct {
	lr        *loopRelay
	terminate bool
}

func newEvLoop(*zap.Logger) (*evLoop, error) { return nil, errors.New("event loops need Linux") }

func (l *evLoop) post(loopReq) {}

func (l *evLoop) alive() bool { return false }

func (l *evLoop) close() {}

func (s *session) relayLoop(*evLoop) (string, bool) { return "", false }
