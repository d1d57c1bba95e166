package pool

// CloseIdle closes the idle connections of every pool whose key match
// accepts (the admin console's KILL <database>) and returns how many it
// closed. Lent connections are not touched: they go back (and stay open)
// when their sessions release them. match runs under the Set's lock and
// must not call the Set.
func (s *Set) CloseIdle(match func(Key) bool) int {
	s.mu.Lock()
	var drop []*Conn
	for k, p := range s.pools {
		if !match(k) {
			continue
		}
		drop = append(drop, p.idle...)
		p.total -= len(p.idle)
		p.idle = nil
		for p.total < s.cfg.Size && len(p.waiters) > 0 {
			s.passSlotLocked(p)
		}
	}
	s.mu.Unlock()
	for _, c := range drop {
		c.Net.Close()
	}
	return len(drop)
}
