package sinks

import "testing"

// Slots as Redis computes them (CLUSTER KEYSLOT), including the hash tag
// rules of the cluster specification.
func TestHashSlot(t *testing.T) {
	for key, want := range map[string]int{
		"123456789":            12739, // the CRC16/XMODEM check value 0x31C3
		"foo":                  12182,
		"{user1000}.following": 3443,
		"{user1000}.followers": 3443,
		"foo{}{bar}":           8363, // an empty tag does not count: the whole key
		"foo{{bar}}zap":        4015, // the tag is "{bar"
		"foo{bar}{zap}":        5061, // the first tag: "bar"
		"":                     0,
	} {
		if got := hashSlot(key); got != want {
			t.Errorf("hashSlot(%q) = %d, want %d", key, got, want)
		}
	}
}
