package testenv

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

const (
	// clusterNodeTimeout is cluster-node-timeout: how long a master may
	// be unreachable before its peers hold it failed and a replica takes
	// over. Short, so that a failover takes a second or two, not the
	// fifteen of the default.
	clusterNodeTimeout = "1000"

	clusterConfigFile   = "nodes.conf"
	clusterStartTimeout = 2 * time.Minute
)

// RedisCluster is a running Redis Cluster of private redis-server
// processes on 127.0.0.1.
type RedisCluster struct {
	// Nodes holds every node, in start order. A node keeps its place
	// whatever its role; which nodes are masters now, Shards tells.
	Nodes []*Redis

	tls bool

	stopOnce sync.Once
	stopErr  error
}

// ClusterShard is a master of a cluster, the replicas that follow it and
// the hash slots it serves (inclusive ranges).
type ClusterShard struct {
	Master   *Redis
	Replicas []*Redis
	Slots    [][2]int
}

// StartRedisCluster starts masters*(1+replicasPerMaster) nodes
// (redis-server --cluster-enabled yes, each on its own free port and bus
// port, keeping nothing on disk but the cluster's own nodes.conf), makes a
// cluster of them with `redis-cli --cluster create`, and waits until every
// node reports cluster_state:ok, the slots are covered and every replica
// has synced. The masters share the 16384 slots evenly. The usual shape is
// 3 masters with 1 replica each, the smallest cluster redis-cli creates and
// one in which every master can fail over.
//
// With fewer than 3 masters, or without redis-cli, the nodes are joined
// with CLUSTER ADDSLOTSRANGE, MEET and REPLICATE instead, which is what
// redis-cli does. Needs Redis 7.0 or newer (cluster-port, ADDSLOTSRANGE).
//
// Options: WithTLS (the cluster bus uses TLS too) and WithACLUser (on every
// node). The cluster keeps running after ctx ends, until Stop; it never
// uses CDCD_TEST_REDIS_URL.
func StartRedisCluster(ctx context.Context, masters, replicasPerMaster int, opts ...RedisOption) (*RedisCluster, error) {
	_, err := exec.LookPath("redis-cli")
	byHand := err != nil || masters < 3
	return startRedisCluster(ctx, masters, replicasPerMaster, byHand, opts)
}

func startRedisCluster(ctx context.Context, masters, replicas int, byHand bool, opts []RedisOption) (_ *RedisCluster, err error) {
	if masters < 1 || replicas < 0 {
		return nil, fmt.Errorf("start redis cluster: %d masters with %d replicas each", masters, replicas)
	}
	o, err := collectRedisOptions(opts)
	if err == nil && o.replicaProxy {
		err = errReplicaProxyOnlySentinel
	}
	if err != nil {
		return nil, fmt.Errorf("start redis cluster: %w", err)
	}
	spec := redisSpec{
		args: []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", clusterConfigFile,
			"--cluster-node-timeout", clusterNodeTimeout,
			// A replica's first sync would wait 5s for others to share it.
			"--repl-diskless-sync-delay", "0",
		},
		bus:  true,
		keep: []string{clusterConfigFile},
		opts: o,
	}
	if o.ca != nil {
		spec.args = append(spec.args, "--tls-cluster", "yes")
	}
	c := &RedisCluster{tls: o.ca != nil}
	defer func() {
		if err != nil {
			_ = c.Stop()
			err = fmt.Errorf("start redis cluster: %w", err)
		}
	}()
	for range masters * (1 + replicas) {
		n, err := startRedisServer(ctx, spec)
		if err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	if byHand {
		err = c.createByHand(ctx, masters, replicas)
	} else {
		err = c.createWithCLI(ctx, replicas, o.ca)
	}
	if err != nil {
		return nil, err
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// createWithCLI makes the cluster with redis-cli, which also picks which
// nodes become masters.
func (c *RedisCluster) createWithCLI(ctx context.Context, replicas int, ca *CA) error {
	var args []string
	if ca != nil {
		args = append(args, "--tls", "--cacert", ca.CertFile, "--cert", ca.ClientCertFile, "--key", ca.ClientKeyFile)
	}
	args = append(args, "--cluster", "create")
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("redis-cli --cluster create: %w\n%s", err, out)
	}
	return nil
}

// createByHand makes the cluster as redis-cli would: the first masters
// nodes take the slots, the others follow them in turn.
func (c *RedisCluster) createByHand(ctx context.Context, masters, replicas int) error {
	ids := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		id, err := n.Do(ctx, "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		ids[i] = id
		// Distinct epochs, as redis-cli sets them: masters that share one
		// must first settle the collision.
		if _, err := n.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1)); err != nil {
			return err
		}
	}
	for i, r := range slotRanges(masters) {
		if _, err := c.Nodes[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(r[0]), strconv.Itoa(r[1])); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes[1:] {
		if _, err := c.Nodes[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(n.Port), strconv.Itoa(n.busPort)); err != nil {
			return err
		}
	}
	// A node can follow only a master it knows.
	err := poll(ctx, func(ctx context.Context) error {
		for _, n := range c.Nodes {
			view, err := c.view(ctx, n)
			if err != nil {
				return err
			}
			if len(view) != len(c.Nodes) || slices.ContainsFunc(view, clusterNode.failing) {
				return fmt.Errorf("node %s does not know every node yet", n.Addr)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := masters; i < len(c.Nodes); i++ {
		if _, err := c.Nodes[i].Do(ctx, "CLUSTER", "REPLICATE", ids[(i-masters)/replicas]); err != nil {
			return err
		}
	}
	return nil
}

// MustRedisCluster starts a cluster with StartRedisCluster or fails t (it
// never skips), and stops the cluster when t ends, also when t fails
// midway.
func MustRedisCluster(t testing.TB, masters, replicasPerMaster int, opts ...RedisOption) *RedisCluster {
	t.Helper()
	return mustStart(t, clusterStartTimeout, func(ctx context.Context) (*RedisCluster, error) {
		return StartRedisCluster(ctx, masters, replicasPerMaster, opts...)
	}, (*RedisCluster).Stop)
}

// Addrs returns the address (host:port) of every node, in start order.
func (c *RedisCluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
}

// URL returns a URL for go-redis's ParseClusterURL naming every node:
// redis://h1:p1?addr=h2:p2&addr=… (rediss:// with TLS).
func (c *RedisCluster) URL() string { return groupURL(c.tls, c.Addrs(), "") }

// Node returns the node at addr (host:port), nil if there is none.
func (c *RedisCluster) Node(addr string) *Redis { return serverAt(c.Nodes, addr) }

// Shards returns the masters that serve slots, with their replicas, ordered
// by their first slot, as the first running node sees them. Right after a
// failover, nodes may not agree yet: WaitHealthy first.
func (c *RedisCluster) Shards(ctx context.Context) ([]ClusterShard, error) {
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		view, err := c.view(ctx, n)
		if err != nil {
			return nil, fmt.Errorf("cluster shards: %w", err)
		}
		return c.shards(view)
	}
	return nil, errors.New("cluster shards: no node is running")
}

func (c *RedisCluster) shards(view []clusterNode) ([]ClusterShard, error) {
	var shards []ClusterShard
	byID := map[string]int{} // master id -> index in shards
	for _, v := range view {
		if len(v.slots) == 0 {
			continue
		}
		m := c.Node(v.addr)
		if m == nil {
			return nil, fmt.Errorf("cluster shards: master %s is not one of ours", v.addr)
		}
		byID[v.id] = len(shards)
		shards = append(shards, ClusterShard{Master: m, Slots: v.slots})
	}
	for _, v := range view {
		i, ok := byID[v.masterID]
		if !ok || v.is("fail") {
			continue
		}
		if r := c.Node(v.addr); r != nil {
			shards[i].Replicas = append(shards[i].Replicas, r)
		}
	}
	slices.SortFunc(shards, func(a, b ClusterShard) int { return a.Slots[0][0] - b.Slots[0][0] })
	return shards, nil
}

// KillMaster crashes (SIGKILL) the master of Shards(ctx)[i] and returns it.
// It does not wait for a replica to take over: WaitHealthy does.
func (c *RedisCluster) KillMaster(ctx context.Context, i int) (*Redis, error) {
	shards, err := c.Shards(ctx)
	if err != nil {
		return nil, fmt.Errorf("kill master: %w", err)
	}
	if i < 0 || i >= len(shards) {
		return nil, fmt.Errorf("kill master %d: the cluster has %d masters", i, len(shards))
	}
	m := shards[i].Master
	if err := m.Kill(); err != nil {
		return nil, fmt.Errorf("kill master %d: %w", i, err)
	}
	return m, nil
}

// Failover has the replica at replicaAddr take over from its master with
// CLUSTER FAILOVER: a graceful failover, in which the master stops taking
// writes until the replica has caught up, so that nothing is lost. It
// returns once the cluster is healthy again with that node as a master.
func (c *RedisCluster) Failover(ctx context.Context, replicaAddr string) error {
	n := c.Node(replicaAddr)
	if n == nil {
		return fmt.Errorf("cluster failover: no node at %s", replicaAddr)
	}
	if _, err := n.Do(ctx, "CLUSTER", "FAILOVER"); err != nil {
		return fmt.Errorf("cluster failover to %s: %w", replicaAddr, err)
	}
	err := poll(ctx, func(ctx context.Context) error { return replicationIs(ctx, n, "role", "master") })
	if err == nil {
		err = c.WaitHealthy(ctx)
	}
	if err != nil {
		return fmt.Errorf("cluster failover to %s: %w", replicaAddr, err)
	}
	return nil
}

// Restart starts node again (after Kill, or stopping it first if it runs)
// on the same ports with its nodes.conf, so that it rejoins as the same
// node, and waits until the cluster is healthy. Its data is gone: a master
// whose replica took over comes back as a replica of it and syncs; one that
// comes back before its peers noticed it was gone serves its slots empty,
// which is how a Redis restart loses writes.
func (c *RedisCluster) Restart(ctx context.Context, node *Redis) error {
	if err := node.Restart(ctx); err != nil {
		return fmt.Errorf("cluster restart %s: %w", node.Addr, err)
	}
	if err := c.WaitHealthy(ctx); err != nil {
		return fmt.Errorf("cluster restart %s: %w", node.Addr, err)
	}
	return nil
}

// WaitReplicated waits until every replica has applied all that its master
// had written when WaitReplicated was called: after it, killing a master
// loses nothing. (Replication is asynchronous; a write is on the replica
// some time after the master acknowledged it.)
func (c *RedisCluster) WaitReplicated(ctx context.Context) error {
	shards, err := c.Shards(ctx)
	if err != nil {
		return fmt.Errorf("wait for the replicas: %w", err)
	}
	for _, sh := range shards {
		if err := waitReplicated(ctx, sh.Master, sh.Replicas); err != nil {
			return fmt.Errorf("wait for the replicas of %s: %w", sh.Master.Addr, err)
		}
	}
	return nil
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// all slots ok, every node agrees which running master serves each slot,
// and every running replica is in sync with its master. After KillMaster
// that means a replica has taken over.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	if err := poll(ctx, c.healthy); err != nil {
		return fmt.Errorf("wait for a healthy cluster: %w", err)
	}
	return nil
}

func (c *RedisCluster) healthy(ctx context.Context) error {
	var running []*Redis
	for _, n := range c.Nodes {
		if n.running() {
			running = append(running, n)
		}
	}
	if len(running) == 0 {
		return errors.New("no node is running")
	}
	views := make([][]clusterNode, len(running))
	follows := map[string]string{} // node address -> the master it follows by its own word, "" for a master
	for i, n := range running {
		info, err := n.Do(ctx, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if s := infoField(info, "cluster_state"); s != "ok" {
			return fmt.Errorf("node %s: cluster_state %s", n.Addr, s)
		}
		if s := infoField(info, "cluster_slots_ok"); s != strconv.Itoa(clusterSlots) {
			return fmt.Errorf("node %s: %s slots ok", n.Addr, s)
		}
		if views[i], err = c.view(ctx, n); err != nil {
			return err
		}
		if err := c.viewHealthy(n, views[i], running); err != nil {
			return err
		}
		for _, v := range views[i] {
			if v.is("myself") {
				follows[n.Addr] = v.masterID
			}
		}
		if follows[n.Addr] != "" {
			if err := replicationIs(ctx, n, "master_link_status", "up"); err != nil {
				return err
			}
		}
	}
	// Every node sees the same masters serving the same slots and every
	// replica following the master it says it follows: gossip has settled.
	agreed := slotOwners(views[0])
	for i, view := range views {
		if !slices.Equal(slotOwners(view), agreed) {
			return fmt.Errorf("nodes %s and %s disagree on who serves which slots", running[0].Addr, running[i].Addr)
		}
		for _, v := range view {
			if want, ok := follows[v.addr]; ok && v.masterID != want {
				return fmt.Errorf("node %s sees node %s following %q, not %q", running[i].Addr, v.addr, v.masterID, want)
			}
		}
	}
	return nil
}

// viewHealthy checks the view of node n: every slot is served by a running
// master it holds reachable, and it knows every running node as reachable.
func (c *RedisCluster) viewHealthy(n *Redis, view []clusterNode, running []*Redis) error {
	byAddr := map[string]clusterNode{}
	for _, v := range view {
		byAddr[v.addr] = v
	}
	for _, r := range running {
		if v, ok := byAddr[r.Addr]; !ok || v.failing() {
			return fmt.Errorf("node %s does not see node %s as a reachable member (%v)", n.Addr, r.Addr, v.flags)
		}
	}
	for slot, addr := range slotOwners(view) {
		if addr == "" {
			return fmt.Errorf("node %s: slot %d has no master", n.Addr, slot)
		}
		if !slices.ContainsFunc(running, func(r *Redis) bool { return r.Addr == addr }) {
			return fmt.Errorf("node %s: slot %d is served by %s, which is down", n.Addr, slot, addr)
		}
	}
	return nil
}

// view returns CLUSTER NODES as node n sees it.
func (c *RedisCluster) view(ctx context.Context, n *Redis) ([]clusterNode, error) {
	reply, err := n.Do(ctx, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	view, err := parseClusterNodes(reply)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.Addr, err)
	}
	return view, nil
}

// Stop crashes every node (there is nothing to flush, and a master shut
// down gracefully would first wait for its replicas) and removes their
// directories. It is idempotent.
func (c *RedisCluster) Stop() error {
	c.stopOnce.Do(func() { c.stopErr = stopRedisServers(c.Nodes) })
	return c.stopErr
}

// stopRedisServers kills servers and removes their directories.
func stopRedisServers(servers []*Redis) error {
	var errs []error
	for _, n := range servers {
		n.mu.Lock()
		n.kill()
		n.mu.Unlock()
		errs = append(errs, n.Stop())
	}
	return errors.Join(errs...)
}
