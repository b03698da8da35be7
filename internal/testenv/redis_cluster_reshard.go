package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// SlotMigration is a hash slot on its way from one master to another, as
// `redis-cli --cluster reshard` moves it: From holds it MIGRATING, To
// IMPORTING. Until Finish, clients meet it half moved: ASK from From for a
// key it no longer holds (or never held: a new key goes to To), TRYAGAIN
// for a command whose keys are on both, and MOVED from To for a command
// sent there without ASKING.
type SlotMigration struct {
	Slot     int
	From, To *Redis

	c            *RedisCluster
	fromID, toID string
	others       []*Redis // the masters but From and To
}

// BeginMigration starts moving slot from the master that serves it to the
// master to: CLUSTER SETSLOT IMPORTING on to, then MIGRATING on the owner.
// No key moves yet.
func (c *RedisCluster) BeginMigration(ctx context.Context, slot int, to *Redis) (*SlotMigration, error) {
	m, err := c.beginMigration(ctx, slot, to)
	if err != nil {
		return nil, fmt.Errorf("migrate slot %d to %s: %w", slot, to.Addr, err)
	}
	return m, nil
}

func (c *RedisCluster) beginMigration(ctx context.Context, slot int, to *Redis) (*SlotMigration, error) {
	if slot < 0 || slot >= clusterSlots {
		return nil, errors.New("no such slot")
	}
	view, err := c.view(ctx, to)
	if err != nil {
		return nil, err
	}
	owner := slotOwners(view)[slot]
	m := &SlotMigration{Slot: slot, From: c.Node(owner), To: to, c: c}
	for _, v := range view {
		switch n := c.Node(v.addr); {
		case v.is("myself"):
			m.toID = v.id
		case v.addr == owner:
			m.fromID = v.id
		case n != nil && len(v.slots) > 0:
			m.others = append(m.others, n)
		}
	}
	if m.From == nil || m.toID == "" {
		return nil, fmt.Errorf("slot served by %q, not one of ours", owner)
	}
	if m.From == to {
		return nil, errors.New("it serves the slot already")
	}
	if _, err := to.Do(ctx, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "IMPORTING", m.fromID); err != nil {
		return nil, err
	}
	if _, err := m.From.Do(ctx, "CLUSTER", "SETSLOT", strconv.Itoa(slot), "MIGRATING", m.toID); err != nil {
		return nil, err
	}
	return m, nil
}

// MoveKeys moves up to n of the slot's keys (all if n < 0) from From to
// To, one MIGRATE at a time, pause after each, and returns how many it
// moved.
func (m *SlotMigration) MoveKeys(ctx context.Context, n int, pause time.Duration) (int, error) {
	host, port, _ := net.SplitHostPort(m.To.Addr)
	moved := 0
	for ; n < 0 || moved < n; moved++ {
		key, err := m.From.Do(ctx, "CLUSTER", "GETKEYSINSLOT", strconv.Itoa(m.Slot), "1")
		if err != nil || key == "" {
			return moved, m.err(err)
		}
		// NOKEY, if the key went meanwhile, is no error.
		if _, err := m.From.Do(ctx, "MIGRATE", host, port, "", "0", "5000", "REPLACE", "KEYS", key); err != nil {
			return moved, m.err(err)
		}
		select {
		case <-ctx.Done():
			return moved + 1, m.err(ctx.Err())
		case <-time.After(pause):
		}
	}
	return moved, nil
}

// Finish moves the keys left and makes To the slot's owner: CLUSTER
// SETSLOT NODE on To, then From, then the other masters, so that no master
// hands the slot back by gossip. Clients that still send the slot to From
// get MOVED. Replicas learn the new owner by gossip: WaitHealthy waits for
// them.
func (m *SlotMigration) Finish(ctx context.Context) error {
	if _, err := m.MoveKeys(ctx, -1, 0); err != nil {
		return err
	}
	for _, n := range append([]*Redis{m.To, m.From}, m.others...) {
		if _, err := n.Do(ctx, "CLUSTER", "SETSLOT", strconv.Itoa(m.Slot), "NODE", m.toID); err != nil {
			return m.err(err)
		}
	}
	return nil
}

func (m *SlotMigration) err(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("migrate slot %d to %s: %w", m.Slot, m.To.Addr, err)
}

// MigrateSlot moves slot to the master to, keys and all, slowly: the slot
// stays half moved for pause before its first key and after each (see
// SlotMigration). It returns how many keys it moved.
func (c *RedisCluster) MigrateSlot(ctx context.Context, slot int, to *Redis, pause time.Duration) (int, error) {
	m, err := c.BeginMigration(ctx, slot, to)
	if err != nil {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, m.err(ctx.Err())
	case <-time.After(pause):
	}
	n, err := m.MoveKeys(ctx, -1, pause)
	if err == nil {
		err = m.Finish(ctx)
	}
	return n, err
}
