//go:build !linux

package proxy

import (
	"errors"

	"go.uber.org/zap"
)

// Parking idle clients needs epoll (park_linux.go); elsewhere an idle
// pooled client keeps its goroutine.

type parker struct{}

func newParker(*zap.Logger) (*parker, error) {
	return nil, errors.New("parking idle clients needs Linux")
}

func (p *parker) park(*session, int) bool { return false }

func (p *parker) wake(*session) bool { return false }

func (p *parker) parked() int { return 0 }

func (p *parker) close() {}
