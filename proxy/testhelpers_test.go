package proxy

import (
	"net"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

type int64Counter struct{ v atomic.Int64 }

func nopLogger() *zap.Logger { return zap.NewNop() }

// discardConn is a net.Conn that swallows writes (error replies in fuzz tests).
type discardConn struct{ net.Conn }

func (discardConn) Write(b []byte) (int, error)      { return len(b), nil }
func (discardConn) Close() error                     { return nil }
func (discardConn) SetDeadline(time.Time) error      { return nil }
func (discardConn) SetWriteDeadline(time.Time) error { return nil }
