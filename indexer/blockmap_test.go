package indexer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// The table agrees with a Go map under random puts and deletes, including
// keys that collide on their home slot.
func TestBlockMapAgreesWithMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var m blockMap
	ref := map[BlockHash]uint32{}
	for step := range 200_000 {
		k := BlockHash(r.IntN(30000)) // includes 0
		if r.IntN(4) == 0 {
			k = BlockHash(r.Uint64()) // wide keys too
		}
		switch r.IntN(3) {
		case 0, 1:
			v := uint32(1 + r.IntN(1000))
			m.Put(k, v)
			ref[k] = v
		case 2:
			m.Delete(k)
			delete(ref, k)
		}
		if step%1000 == 0 {
			if m.Len() != len(ref) {
				t.Fatalf("step %d: Len %d, want %d", step, m.Len(), len(ref))
			}
			for k, v := range ref {
				if got, ok := m.Get(k); !ok || got != v {
					t.Fatalf("step %d: Get(%d) = %d, %v; want %d", step, k, got, ok, v)
				}
			}
			seen := 0
			m.All(func(k BlockHash, v uint32) {
				seen++
				if ref[k] != v {
					t.Fatalf("step %d: All gave %d→%d, want %d", step, k, v, ref[k])
				}
			})
			if seen != len(ref) {
				t.Fatalf("step %d: All visited %d, want %d", step, seen, len(ref))
			}
			if err := m.check(); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
		}
	}
	for k := range ref {
		m.Delete(k)
	}
	if m.Len() != 0 || len(m.buckets) > blockMapShrinkBuckets {
		t.Fatalf("after deleting everything: Len %d, %d slots", m.Len(), bucketSlots*len(m.buckets))
	}
	if _, ok := m.Get(5); ok {
		t.Fatal("Get on an empty map found a key")
	}
}

// A table of n entries stays between blockMapGrowLoad and blockMapMaxLoad
// full while it grows, whatever n is, and a lookup of any key it does not
// hold fails.
func TestBlockMapLoad(t *testing.T) {
	var m blockMap
	r := rand.New(rand.NewPCG(3, 4))
	for n := 1; n <= 100_000; n++ {
		m.Put(BlockHash(r.Uint64()|1), uint32(n))
		if n < 1000 { // rounding up to whole buckets weighs on small tables
			continue
		}
		if load := float64(m.Len()) / float64(bucketSlots*len(m.buckets)); load < blockMapGrowLoad-0.01 || load > blockMapMaxLoad {
			t.Fatalf("%d entries in %d slots: load %.3f outside [%v, %v]", m.Len(), bucketSlots*len(m.buckets), load, blockMapGrowLoad, blockMapMaxLoad)
		}
	}
	for range 10_000 {
		if _, ok := m.Get(BlockHash(r.Uint64() &^ 1)); ok { // even keys were never put
			t.Fatal("Get found a key that was never put")
		}
	}
}

// check verifies the table's bookkeeping: the entry count, and each
// bucket's overflow count against the entries that passed it.
func (m *blockMap) check() error {
	want := make([]uint32, len(m.buckets))
	n := 0
	for b := range m.buckets {
		bk := &m.buckets[b]
		used := int(bk.meta & 0xff)
		if used > bucketSlots {
			return fmt.Errorf("bucket %d: %d slots used", b, used)
		}
		if used < bucketSlots && bk.meta >= overflowOne {
			return fmt.Errorf("bucket %d has room for %d more but was passed by %d entries", b, bucketSlots-used, bk.meta>>8)
		}
		for j := range used {
			n++
			for h := m.home(bk.key(j)); h != b; h = m.next(h) {
				want[h]++
			}
		}
	}
	if n != m.n {
		return fmt.Errorf("%d entries in the buckets, n = %d", n, m.n)
	}
	for b := range m.buckets {
		if got := m.buckets[b].meta >> 8; got != want[b] {
			return fmt.Errorf("bucket %d: overflow count %d, want %d", b, got, want[b])
		}
	}
	return nil
}

// The layout the package documentation and docs/ promise: a node of 28
// bytes, a bucket of one cache line.
func TestLayoutSizes(t *testing.T) {
	if got := unsafe.Sizeof(node{}); got != 28 {
		t.Errorf("node is %d bytes, want 28", got)
	}
	if got := unsafe.Sizeof(bucket{}); got != 64 {
		t.Errorf("bucket is %d bytes, want 64", got)
	}
	// The compiler keeps a struct in registers only while it has at most
	// four fields and 32 bytes (cmd/compile's canSSA); FindMatches appends
	// one Match per matching rank, and a larger Match costs a quarter of
	// the query replay's throughput.
	if got := reflect.TypeFor[Match]().NumField(); got > 4 {
		t.Errorf("Match has %d fields, want at most 4", got)
	}
	if got := unsafe.Sizeof(Match{}); got > 32 {
		t.Errorf("Match is %d bytes, want at most 32", got)
	}
}

// FuzzBlockMap runs puts, adds, takes and lookups from the fuzzer's bytes
// against a Go map, and checks the table's bookkeeping after each.
func FuzzBlockMap(f *testing.F) {
	f.Add([]byte{0, 1, 0, 2, 0, 3, 2, 1, 1, 2})
	f.Add(bytes.Repeat([]byte{0, 7, 0, 9, 2, 7}, 40))
	f.Fuzz(func(t *testing.T, ops []byte) {
		var m blockMap
		ref := map[BlockHash]uint32{}
		for i := 0; i+1 < len(ops); i += 2 {
			k := BlockHash(ops[i+1]) * 0x10001 // a small key space, 0 included
			switch ops[i] % 4 {
			case 0:
				m.Put(k, uint32(i+1))
				ref[k] = uint32(i + 1)
			case 1:
				if _, ok := ref[k]; !ok {
					m.Add(k, uint32(i+1))
					ref[k] = uint32(i + 1)
				}
			case 2:
				v, ok := m.Take(k)
				if want, wok := ref[k]; ok != wok || v != want {
					t.Fatalf("op %d: Take(%d) = %d, %v; want %d, %v", i/2, k, v, ok, want, wok)
				}
				delete(ref, k)
			case 3:
				v, ok := m.Get(k)
				if want, wok := ref[k]; ok != wok || v != want {
					t.Fatalf("op %d: Get(%d) = %d, %v; want %d, %v", i/2, k, v, ok, want, wok)
				}
			}
			if m.Len() != len(ref) {
				t.Fatalf("op %d: Len %d, want %d", i/2, m.Len(), len(ref))
			}
			if err := m.check(); err != nil {
				t.Fatalf("op %d: %v", i/2, err)
			}
		}
	})
}

// Put sets k to node v, whether or not the map holds k: the reference
// operation the tests drive the table with.
func (m *blockMap) Put(k BlockHash, v uint32) {
	x := mix(k)
	if m.n > 0 {
		if b, j := m.find(x); b >= 0 {
			m.buckets[b].node[j] = v
			return
		}
	}
	m.add(x, v)
}
