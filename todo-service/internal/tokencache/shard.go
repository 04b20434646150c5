package tokencache

import (
	"crypto/sha256"
	"sync"
	"time"
)

// shard is one part of the cache: a map from token hash to entry and a
// doubly linked list of the same entries from most to least recently
// used. Each shard evicts on its own, so the cache as a whole evicts in
// approximately, not exactly, least-recently-used order.
type shard struct {
	capacity int // maximum entries, at least 1; set once by newShards

	mu         sync.Mutex
	items      map[[sha256.Size]byte]*entry // guarded by mu
	head, tail *entry                       // most and least recently used; guarded by mu
}

// get returns the entry for sum and marks it as the most recently used.
// An entry whose exp is not after now is removed instead, and get returns
// nil and expired=true.
func (s *shard) get(sum [sha256.Size]byte, now time.Time) (e *entry, expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	e = s.items[sum]
	if e == nil {
		return nil, false
	}
	if !now.Before(e.claims.Expiry) {
		s.unlink(e)
		delete(s.items, sum)
		return nil, true
	}
	s.moveToFront(e)
	return e, false
}

// add inserts e as the most recently used entry, replacing an entry with
// the same hash. When the shard is full it drops the least recently used
// entry and returns evicted=true.
func (s *shard) add(e *entry) (evicted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()

	if old := s.items[e.sum]; old != nil {
		s.unlink(old)
		delete(s.items, old.sum)
	}
	if len(s.items) >= s.capacity {
		oldest := s.tail
		s.unlink(oldest)
		delete(s.items, oldest.sum)
		evicted = true
	}

	s.items[e.sum] = e
	s.pushFront(e)
	return evicted
}

// remove drops e if it is still the entry stored for its hash, and reports
// whether it did. A concurrent call may already have replaced or removed
// it.
func (s *shard) remove(e *entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.items[e.sum] != e {
		return false
	}
	s.unlink(e)
	delete(s.items, e.sum)
	return true
}

func (s *shard) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// The list helpers below require s.mu to be held.

func (s *shard) pushFront(e *entry) {
	e.prev = nil
	e.next = s.head
	if s.head != nil {
		s.head.prev = e
	}
	s.head = e
	if s.tail == nil {
		s.tail = e
	}
}

func (s *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		s.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		s.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (s *shard) moveToFront(e *entry) {
	if s.head == e {
		return
	}
	s.unlink(e)
	s.pushFront(e)
}
