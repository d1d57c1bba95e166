package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// IdleResult is the RSS of a relay before and with n idle sessions open.
type IdleResult struct {
	Sessions  int
	BeforeKiB int64
	WithKiB   int64
}

// PerSessionKiB is the RSS growth per idle session.
func (r IdleResult) PerSessionKiB() float64 {
	if r.Sessions == 0 {
		return 0
	}
	return float64(r.WithKiB-r.BeforeKiB) / float64(r.Sessions)
}

// measureIdle opens n sessions with connString (each one completes startup
// and one query, then sits idle), waits for the relay's RSS to settle,
// reads it, and closes them all.
func measureIdle(ctx context.Context, pid int, connString string, n int) (IdleResult, error) {
	res := IdleResult{Sessions: n}
	// One session first, so lazily built state is not counted per session.
	if err := onReplica(ctx, connString); err != nil {
		return res, err
	}
	time.Sleep(time.Second)
	before, err := procRSS(pid)
	if err != nil {
		return res, err
	}
	res.BeforeKiB = before

	conns := make([]*pgconn.PgConn, n)
	defer func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = c.Close(cctx)
			}()
		}
		wg.Wait()
	}()
	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := pgconn.Connect(cctx, connString)
				if err == nil {
					conns[i] = c
					_, err = c.Exec(cctx, "SELECT 1").ReadAll()
				}
				cancel()
				if err != nil {
					errs[w] = fmt.Errorf("idle session %d: %w", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	// Let the relay finish allocating (goroutines parked on reads, buffers
	// returned) before reading RSS; take the highest of a few samples.
	for i := 0; i < 4; i++ {
		time.Sleep(500 * time.Millisecond)
		rss, err := procRSS(pid)
		if err != nil {
			return res, err
		}
		res.WithKiB = max(res.WithKiB, rss)
	}
	return res, nil
}
