package zmqevents

import (
	"encoding/binary"
	"testing"
)

// overLimit is a plain reading of a ZMTP stream: the greeting, then frames;
// it reports whether a message (frames joined by MORE, commands alone)
// announces more than max bytes.
func overLimit(b []byte, max uint64) bool {
	if len(b) <= greetingBytes {
		return false
	}
	b = b[greetingBytes:]
	var msg uint64
	for len(b) >= 2 {
		flags := b[0]
		var size uint64
		if flags&0x02 != 0 {
			if len(b) < 9 {
				return false
			}
			size, b = binary.BigEndian.Uint64(b[1:9]), b[9:]
		} else {
			size, b = uint64(b[1]), b[2:]
		}
		if size > max || msg+size > max {
			return true
		}
		msg += size
		if uint64(len(b)) < size {
			return false
		}
		b = b[size:]
		if flags&0x01 == 0 || flags&0x04 != 0 {
			msg = 0
		}
	}
	return false
}

// FuzzLimitedConn feeds a stream to the framing follower in chunks: it
// refuses exactly the streams the plain reading finds over the limit,
// whatever the chunking.
func FuzzLimitedConn(f *testing.F) {
	greeting := make([]byte, greetingBytes)
	f.Add(append(greeting, 0x01, 3, 'a', 'b', 'c', 0x00, 200), uint8(7))
	f.Add(append(greeting, 0x02, 0, 0, 0, 0, 0, 0, 1, 0), uint8(1))
	f.Add(append(greeting, 0x04, 250), uint8(64))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		const max = 300
		c := &limitedConn{max: max, greeting: greetingBytes}
		step := int(chunk%64) + 1
		var err error
		for i := 0; i < len(stream) && err == nil; i += step {
			err = c.follow(stream[i:min(i+step, len(stream))])
		}
		if want := overLimit(stream, max); (err != nil) != want {
			t.Fatalf("follow error %v, plain reading over the limit %v", err, want)
		}
	})
}
