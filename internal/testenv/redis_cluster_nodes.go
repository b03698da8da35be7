package testenv

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// clusterNode is one line of CLUSTER NODES: a node as another node (or
// itself) sees it.
type clusterNode struct {
	id, addr string // addr: host:port, without the bus port
	flags    []string
	masterID string   // of a replica; "" for a master
	slots    [][2]int // inclusive ranges; migrating and importing slots left out
}

func (n clusterNode) is(flag string) bool { return slices.Contains(n.flags, flag) }

// failing reports whether the viewer holds the node for unreachable, or
// does not know where it is.
func (n clusterNode) failing() bool {
	return n.is("fail") || n.is("fail?") || n.is("handshake") || n.is("noaddr")
}

// parseClusterNodes parses the reply to CLUSTER NODES:
//
//	<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch> <link-state> <slot> ...
func parseClusterNodes(reply string) ([]clusterNode, error) {
	var nodes []clusterNode
	for _, line := range strings.Split(strings.TrimSpace(reply), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			return nil, fmt.Errorf("cluster nodes: malformed line %q", line)
		}
		addr, _, _ := strings.Cut(f[1], "@")
		n := clusterNode{id: f[0], addr: addr, flags: strings.Split(f[2], ",")}
		if f[3] != "-" {
			n.masterID = f[3]
		}
		for _, s := range f[8:] {
			if strings.HasPrefix(s, "[") {
				continue // a slot being migrated: it is listed with its owner too
			}
			lo, hi, isRange := strings.Cut(s, "-")
			a, err := strconv.Atoi(lo)
			if err != nil {
				return nil, fmt.Errorf("cluster nodes: slot %q: %w", s, err)
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(hi); err != nil {
					return nil, fmt.Errorf("cluster nodes: slot %q: %w", s, err)
				}
			}
			n.slots = append(n.slots, [2]int{a, b})
		}
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// slotOwners maps each slot to the address of the master that serves it in
// a view; "" where none does.
func slotOwners(view []clusterNode) []string {
	owners := make([]string, clusterSlots)
	for _, n := range view {
		for _, r := range n.slots {
			for s := r[0]; s <= r[1] && s < clusterSlots; s++ {
				owners[s] = n.addr
			}
		}
	}
	return owners
}

// slotRanges splits the slots evenly into n ranges, as redis-cli does.
func slotRanges(n int) [][2]int {
	ranges := make([][2]int, n)
	for i := range n {
		ranges[i] = [2]int{i * clusterSlots / n, (i+1)*clusterSlots/n - 1}
	}
	return ranges
}

// infoField returns the value of field in the reply to INFO or CLUSTER
// INFO ("field:value" lines), "" if absent.
func infoField(info, field string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}
