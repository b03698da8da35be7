package testenv

// Failovers of a RedisSentinel group: crashes, requested failovers, and
// pinning the replicas to their primary.

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// KillPrimary crashes (SIGKILL) the current primary and returns it. The
// sentinels notice after down-after-milliseconds and promote a replica:
// the one with the lowest replica-priority, then the most data (Prefer
// chooses). WaitFailover waits for it.
func (s *RedisSentinel) KillPrimary(ctx context.Context) (*Redis, error) {
	p, err := s.Primary(ctx)
	if err != nil {
		return nil, fmt.Errorf("kill primary: %w", err)
	}
	if err := p.Kill(); err != nil {
		return nil, fmt.Errorf("kill primary: %w", err)
	}
	// Only now: a sentinel may still point a proxied replica at the
	// primary, but the primary is gone and can give it nothing.
	if err := s.unpin(ctx); err != nil {
		return nil, fmt.Errorf("kill primary: %w", err)
	}
	return p, nil
}

// Prefer makes replica the one the sentinels promote next: its
// replica-priority becomes 1 and every other data server's 100, whatever
// their data; it returns once every running sentinel sees that.
func (s *RedisSentinel) Prefer(ctx context.Context, replica *Redis) error {
	for _, n := range s.Nodes {
		if !n.running() {
			continue
		}
		prio := "100"
		if n == replica {
			prio = "1"
		}
		if _, err := n.Do(ctx, "CONFIG", "SET", "replica-priority", prio); err != nil {
			return fmt.Errorf("prefer %s: %w", replica.Addr, err)
		}
	}
	err := poll(ctx, func(ctx context.Context) error {
		for _, sn := range s.Sentinels {
			if !sn.running() {
				continue
			}
			views, err := s.replicaViews(ctx, sn)
			if err != nil {
				return err
			}
			for addr, v := range views {
				want := "100"
				if addr == replica.Addr {
					want = "1"
				}
				if n := s.node(addr); n != nil && n.running() && v["slave-priority"] != want {
					return fmt.Errorf("sentinel %s sees replica %s with priority %s", sn.Addr, addr, v["slave-priority"])
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("prefer %s: %w", replica.Addr, err)
	}
	return nil
}

// Failover makes the sentinels promote replica now (SENTINEL FAILOVER,
// after Prefer), with the primary still running, and returns once they all
// name it the primary and it serves as one. The old primary becomes a
// replica of it a few seconds later and drops what the new one lacks.
//
// A replica behind a proxy (WithReplicaProxy) refuses the sentinels
// REPLICAOF until it is the primary, lest one of them move it off its proxy
// in the moment before the promotion; so once the leading sentinel has
// chosen it, Failover runs the REPLICAOF NO ONE (and the CLIENT KILL) the
// sentinel sent and the replica refused, and the sentinel goes on from
// there.
func (s *RedisSentinel) Failover(ctx context.Context, replica *Redis) error {
	if err := s.failover(ctx, replica); err != nil {
		return fmt.Errorf("sentinel failover to %s: %w", replica.Addr, err)
	}
	return nil
}

func (s *RedisSentinel) failover(ctx context.Context, replica *Redis) error {
	if err := s.Prefer(ctx, replica); err != nil {
		return err
	}
	sn, err := s.firstSentinel()
	if err != nil {
		return err
	}
	if _, err := sn.Do(ctx, "SENTINEL", "FAILOVER", s.MasterName); err != nil {
		return err
	}
	s.mu.Lock()
	_, proxied := s.proxies[replica]
	pinned := proxied && s.pinned
	s.mu.Unlock()
	if pinned {
		err := poll(ctx, func(ctx context.Context) error {
			views, err := s.replicaViews(ctx, sn)
			if err != nil {
				return err
			}
			for addr, v := range views {
				if strings.Contains(v["flags"], "promoted") && addr != replica.Addr {
					return fmt.Errorf("sentinel %s chose %s instead", sn.Addr, addr)
				}
			}
			if !strings.Contains(views[replica.Addr]["flags"], "promoted") {
				return fmt.Errorf("sentinel %s has not chosen it yet", sn.Addr)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if _, err := replica.Do(ctx, "REPLICAOF", "NO", "ONE"); err != nil {
			return err
		}
		if _, err := replica.Do(ctx, "CLIENT", "KILL", "TYPE", "normal"); err != nil {
			return err
		}
	}
	// The sentinels reconfigure the other replicas, which the proxied ones
	// refuse until now.
	if err := s.unpin(ctx); err != nil {
		return err
	}
	_, err = s.waitPrimary(ctx, func(n *Redis) bool { return n == replica })
	return err
}

// WaitFailover waits until every running sentinel names the same primary
// other than old and that server serves as a primary, and returns it.
func (s *RedisSentinel) WaitFailover(ctx context.Context, old *Redis) (*Redis, error) {
	p, err := s.waitPrimary(ctx, func(n *Redis) bool { return n != old })
	if err != nil {
		return nil, fmt.Errorf("wait for a failover from %s: %w", old.Addr, err)
	}
	return p, nil
}

// waitPrimary waits until every running sentinel names the same primary,
// one that want accepts and that reports role:master.
func (s *RedisSentinel) waitPrimary(ctx context.Context, want func(*Redis) bool) (*Redis, error) {
	var primary *Redis
	err := poll(ctx, func(ctx context.Context) error {
		primary = nil
		for _, sn := range s.Sentinels {
			if !sn.running() {
				continue
			}
			addr, err := s.masterAddr(ctx, sn)
			if err != nil {
				return err
			}
			n := s.node(addr)
			if n == nil || !want(n) || (primary != nil && n != primary) {
				return fmt.Errorf("sentinel %s names %s as the primary", sn.Addr, addr)
			}
			primary = n
		}
		if primary == nil {
			return errors.New("no sentinel is running")
		}
		return replicationIs(ctx, primary, "role", "master")
	})
	return primary, err
}

// pin denies REPLICAOF and SLAVEOF to the sentinels on the proxied
// replicas, so that no sentinel takes them off their proxy; unpin allows it
// again. See StartRedisSentinel.
func (s *RedisSentinel) pin(ctx context.Context) error   { return s.setPinned(ctx, true) }
func (s *RedisSentinel) unpin(ctx context.Context) error { return s.setPinned(ctx, false) }

func (s *RedisSentinel) setPinned(ctx context.Context, pinned bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.proxies) == 0 || s.pinned == pinned {
		return nil
	}
	for r := range s.proxies {
		if !r.running() {
			continue
		}
		if err := setPin(ctx, r, pinned); err != nil {
			return err
		}
	}
	s.pinned = pinned
	return nil
}

// setPin denies (pinned) or allows the sentinels' user REPLICAOF and
// SLAVEOF on r.
func setPin(ctx context.Context, r *Redis, pinned bool) error {
	rules := []string{"+replicaof", "+slaveof"}
	if pinned {
		rules = []string{"-replicaof", "-slaveof"}
	}
	if _, err := r.Do(ctx, append([]string{"ACL", "SETUSER", sentinelUser}, rules...)...); err != nil {
		return fmt.Errorf("replica %s: %w", r.Addr, err)
	}
	return nil
}
