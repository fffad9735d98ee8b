package zmqevents

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/transport"
)

// MaxMessageBytes caps one ZMQ message (all its frames) a publisher may send
// the router. The decoders cap what a batch may hold far below it; this cap
// protects the connection itself, since zmq4, like libzmq by default,
// allocates whatever length a frame header announces.
const MaxMessageBytes = 64 << 20

// The router dials publishers through transports of its own, registered in
// zmq4 under these names: TCP and IPC connections read through a buffer
// (zmq4 reads each frame header and body with its own system call) and
// checked against MaxMessageBytes before zmq4 sees a frame.
const (
	limitedTCP = "kvr-tcp"
	limitedIPC = "kvr-ipc"
)

// registerOnce registers the transports in zmq4's process-wide table, the
// one way zmq4 lets a caller wrap its connections.
var registerOnce sync.Once

func registerTransports() {
	registerOnce.Do(func() {
		_ = zmq4.RegisterTransport(limitedTCP, limitedTransport{transport.New("tcp"), "tcp"})
		_ = zmq4.RegisterTransport(limitedIPC, limitedTransport{transport.New("unix"), "ipc"})
	})
}

// dialAddr maps a publisher's address onto the router's transports.
func dialAddr(addr string) string {
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		return limitedTCP + addr[len("tcp"):]
	case strings.HasPrefix(addr, "ipc://"):
		return limitedIPC + addr[len("ipc"):]
	}
	return addr
}

type limitedTransport struct {
	transport.Transport
	scheme string
}

func (t limitedTransport) Dial(ctx context.Context, d transport.Dialer, addr string) (net.Conn, error) {
	c, err := t.Transport.Dial(ctx, d, addr)
	if err != nil {
		return nil, err
	}
	return newLimitedConn(c, MaxMessageBytes), nil
}

// limitedConn reads a ZMTP 3 stream through a buffer and follows its
// framing: the 64-byte greeting, then frames of a flags byte, a 1- or 8-byte
// length and a body. A message (frames joined by the MORE flag) longer than
// max fails the read, which closes the connection; the router dials again.
type limitedConn struct {
	net.Conn
	r   *bufio.Reader
	max uint64

	greeting int // greeting bytes still to pass
	hdr      [9]byte
	hdrLen   int    // header bytes seen of the current frame
	body     uint64 // body bytes still to pass
	msg      uint64 // bytes of the current message so far
	more     bool   // the current frame has MORE set
}

const greetingBytes = 64

func newLimitedConn(c net.Conn, max uint64) *limitedConn {
	return &limitedConn{Conn: c, r: bufio.NewReaderSize(c, 64<<10), max: max, greeting: greetingBytes}
}

// Read reads through the buffer and follows the framing of what it returns.
func (c *limitedConn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if ferr := c.follow(p[:n]); ferr != nil {
		return 0, ferr
	}
	return n, err
}

// follow advances the framing state over b.
func (c *limitedConn) follow(b []byte) error {
	for len(b) > 0 {
		switch {
		case c.greeting > 0:
			k := min(c.greeting, len(b))
			c.greeting -= k
			b = b[k:]
		case c.body > 0:
			k := min(c.body, uint64(len(b)))
			c.body -= k
			b = b[k:]
			if c.body == 0 {
				c.frameDone()
			}
		default:
			c.hdr[c.hdrLen] = b[0]
			c.hdrLen++
			b = b[1:]
			flags := c.hdr[0]
			need := 2
			if flags&0x02 != 0 { // LONG
				need = 9
			}
			if c.hdrLen < need {
				continue
			}
			var size uint64
			if need == 2 {
				size = uint64(c.hdr[1])
			} else {
				size = binary.BigEndian.Uint64(c.hdr[1:9])
			}
			c.more = flags&0x01 != 0 && flags&0x04 == 0 // commands are single frames
			c.hdrLen = 0
			if size > c.max || c.msg+size > c.max {
				return fmt.Errorf("zmq message over %d bytes (a frame of %d bytes announced)", c.max, size)
			}
			c.msg += size
			c.body = size
			if size == 0 {
				c.frameDone()
			}
		}
	}
	return nil
}

func (c *limitedConn) frameDone() {
	if !c.more {
		c.msg = 0
	}
}
