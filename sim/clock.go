package sim

import (
	"sync/atomic"
	"time"
)

// Clock tells simulated time: how long since the simulation started.
// Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Duration
}

// WallClock is simulated time that runs Speedup times as fast as the wall
// clock: a step of simulated duration d takes d/Speedup of real time. It
// reads the time package's clock, so that tests may run it in a
// testing/synctest bubble.
type WallClock struct {
	start   time.Time
	speedup float64
}

// NewWallClock starts a clock at zero now.
func NewWallClock(speedup float64) *WallClock {
	return &WallClock{start: time.Now(), speedup: speedup}
}

// Now returns the simulated time since the clock started.
func (c *WallClock) Now() time.Duration {
	return time.Duration(float64(time.Since(c.start)) * c.speedup)
}

// Speedup returns the ratio of simulated to wall time.
func (c *WallClock) Speedup() float64 { return c.speedup }

// WallUntil returns the wall time left until simulated time t (negative
// once it has passed).
func (c *WallClock) WallUntil(t time.Duration) time.Duration {
	return time.Until(c.start.Add(time.Duration(float64(t) / c.speedup)))
}

// ManualClock is simulated time that moves only when told: the clock of a
// lockstep fleet, which Fleet.AdvanceTo sets.
type ManualClock struct{ now atomic.Int64 }

// Now returns the time last set.
func (c *ManualClock) Now() time.Duration { return time.Duration(c.now.Load()) }

// Set moves the clock to t; it never moves backwards.
func (c *ManualClock) Set(t time.Duration) {
	for {
		cur := c.now.Load()
		if int64(t) <= cur || c.now.CompareAndSwap(cur, int64(t)) {
			return
		}
	}
}

var (
	_ Clock = (*WallClock)(nil)
	_ Clock = (*ManualClock)(nil)
)
