package rules

import "slices"

// smallSetMax is how many items a smallSet scans before it indexes them in
// a map. Most transactions collect a handful of keys and touch a section or
// two: comparing a few is cheaper than hashing them, and needs no map.
const smallSetMax = 8

// identified is an item of a smallSet: items with the same id are the same.
type identified[K comparable] interface{ id() K }

// smallSet is a set of items in insertion order. While it holds at most
// smallSetMax items a lookup scans them; past that they are indexed by id.
// The zero value is empty; a caller may start items on inline storage
// (items = arr[:0]) to spare the first allocation.
type smallSet[T identified[K], K comparable] struct {
	items []T
	index map[K]int32 // id -> position in items; nil while small
}

// find returns the position of the item with id k, or -1.
func (s *smallSet[T, K]) find(k K) int {
	if s.index != nil {
		if i, ok := s.index[k]; ok {
			return int(i)
		}
		return -1
	}
	for i := range s.items {
		if s.items[i].id() == k {
			return i
		}
	}
	return -1
}

// has reports whether an item with id k is in the set.
func (s *smallSet[T, K]) has(k K) bool { return s.find(k) >= 0 }

// add adds t unless an item with its id is there, and reports whether it
// did.
func (s *smallSet[T, K]) add(t T) bool {
	if s.has(t.id()) {
		return false
	}
	s.insert(t)
	return true
}

// insert appends t, whose id must not be in the set (the caller looked it
// up already), and returns its position.
func (s *smallSet[T, K]) insert(t T) int {
	s.items = append(s.items, t)
	i := len(s.items) - 1
	switch {
	case s.index != nil:
		s.index[t.id()] = int32(i)
	case len(s.items) > smallSetMax:
		s.reindex()
	}
	return i
}

// deleteFunc removes the items del reports, keeping the order of the rest.
func (s *smallSet[T, K]) deleteFunc(del func(T) bool) {
	s.items = slices.DeleteFunc(s.items, del)
	s.index = nil
	if len(s.items) > smallSetMax {
		s.reindex()
	}
}

func (s *smallSet[T, K]) reindex() {
	s.index = make(map[K]int32, 2*len(s.items))
	for i := range s.items {
		s.index[s.items[i].id()] = int32(i)
	}
}

func (s *smallSet[T, K]) len() int { return len(s.items) }
