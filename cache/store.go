package cache

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// ErrUnavailable is returned by a store that is skipping calls for a while
// after a failure; the caller treats it as a miss without waiting.
var ErrUnavailable = errors.New("cache store unavailable")

// Entry is one key and its encoded value.
type Entry struct {
	Key   string
	Value []byte
}

// Store keeps encoded values for a while. Values are opaque to it; checking
// them is the caller's job.
type Store interface {
	// Get returns one value per key, nil where the key is missing.
	Get(ctx context.Context, keys ...string) ([][]byte, error)
	// Set stores the entries for ttl.
	Set(ctx context.Context, ttl time.Duration, entries ...Entry) error
	Close() error
}

// memoryEntryOverhead approximates the bookkeeping of one entry (list
// element, map slot, headers) so that many tiny entries still count.
const memoryEntryOverhead = 96

// MemoryStore is an LRU bounded by the bytes of its keys and values.
type MemoryStore struct {
	maxBytes int64
	now      func() time.Time

	mu    sync.Mutex
	ll    *list.List // front = most recently used
	items map[string]*list.Element
	bytes atomic.Int64
}

type memoryItem struct {
	key     string
	value   []byte
	expires time.Time
}

func (it *memoryItem) size() int64 {
	return int64(len(it.key)+len(it.value)) + memoryEntryOverhead
}

// NewMemoryStore returns an empty store holding at most maxBytes.
func NewMemoryStore(maxBytes int64) *MemoryStore {
	return &MemoryStore{
		maxBytes: maxBytes,
		now:      time.Now,
		ll:       list.New(),
		items:    map[string]*list.Element{},
	}
}

// Get implements Store.
func (s *MemoryStore) Get(_ context.Context, keys ...string) ([][]byte, error) {
	out := make([][]byte, len(keys))
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, k := range keys {
		el, ok := s.items[k]
		if !ok {
			continue
		}
		it := el.Value.(*memoryItem)
		if !now.Before(it.expires) {
			s.remove(el)
			continue
		}
		s.ll.MoveToFront(el)
		out[i] = it.value
	}
	return out, nil
}

// Set implements Store. Values are kept as given: callers must not modify them.
func (s *MemoryStore) Set(_ context.Context, ttl time.Duration, entries ...Entry) error {
	expires := s.now().Add(ttl)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range entries {
		if el, ok := s.items[e.Key]; ok {
			s.remove(el)
		}
		it := &memoryItem{key: e.Key, value: e.Value, expires: expires}
		if it.size() > s.maxBytes {
			continue
		}
		s.items[e.Key] = s.ll.PushFront(it)
		s.bytes.Add(it.size())
		for s.bytes.Load() > s.maxBytes {
			s.remove(s.ll.Back())
		}
	}
	return nil
}

func (s *MemoryStore) remove(el *list.Element) {
	it := el.Value.(*memoryItem)
	s.ll.Remove(el)
	delete(s.items, it.key)
	s.bytes.Add(-it.size())
}

// Bytes is the current size of the store as counted against maxBytes.
func (s *MemoryStore) Bytes() int64 { return s.bytes.Load() }

// Len is the number of entries held.
func (s *MemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Close implements Store.
func (s *MemoryStore) Close() error { return nil }
