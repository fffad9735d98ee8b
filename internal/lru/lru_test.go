package lru

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSetOrder(t *testing.T) {
	c := New[uint64](4)
	for k := range uint64(4) {
		c.Add(k) // 3 is now the most recent, 0 the least
	}
	c.Touch(0)
	if got := c.Evict(); got != 1 {
		t.Errorf("Evict = %d, want 1", got)
	}
	c.Add(9)
	c.Use(2)  // held: touched
	c.Use(10) // not held: added
	want := []uint64{3, 0, 9, 2, 10}
	var got []uint64
	for c.Len() > 0 {
		got = append(got, c.Evict())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("eviction order (-want +got):\n%s", diff)
	}
	if c.Contains(9) {
		t.Errorf("Contains(9) after evicting everything")
	}
}
