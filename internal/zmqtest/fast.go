package zmqtest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-zeromq/zmq4"
	"github.com/go-zeromq/zmq4/security/null"
)

// FastPublisher is a publisher for throughput benchmarks. go-zeromq's PUB
// socket makes one system call per message, which on a small machine
// measures the publisher rather than the subscriber; libzmq, which engines
// use, batches queued messages into large writes. FastPublisher does the
// ZMTP handshake of a PUB socket with go-zeromq, then writes pre-framed
// messages through a 256 KiB buffer, as a libzmq publisher with a backlog
// does. It serves one subscriber.
type FastPublisher struct {
	ln   net.Listener
	conn net.Conn
	w    *bufio.Writer
}

// NewFastPublisher listens on a loopback port.
func NewFastPublisher() (*FastPublisher, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &FastPublisher{ln: ln}, nil
}

// Addr is the publisher's address, tcp://127.0.0.1:port.
func (p *FastPublisher) Addr() string { return "tcp://" + p.ln.Addr().String() }

// Accept waits for the subscriber, does the handshake and reads its
// subscription, within timeout.
func (p *FastPublisher) Accept(timeout time.Duration) error {
	if tl, ok := p.ln.(*net.TCPListener); ok {
		_ = tl.SetDeadline(time.Now().Add(timeout))
	}
	c, err := p.ln.Accept()
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	zc, err := zmq4.Open(c, null.Security(), zmq4.Pub, zmq4.SocketIdentity("bench"), true, nil)
	if err != nil {
		c.Close()
		return err
	}
	// The subscription: one frame, 0x01 then the topic.
	msg, err := zc.RecvMsg()
	if err != nil {
		c.Close()
		return fmt.Errorf("read the subscription: %w", err)
	}
	if len(msg.Frames) != 1 || len(msg.Frames[0]) == 0 || msg.Frames[0][0] != 1 {
		c.Close()
		return errors.New("the subscriber sent no subscription")
	}
	_ = c.SetDeadline(time.Time{})
	p.conn, p.w = c, bufio.NewWriterSize(c, 256<<10)
	return nil
}

// Send buffers one message of the given frames.
func (p *FastPublisher) Send(frames ...[]byte) error {
	for i, f := range frames {
		var flag byte
		if i < len(frames)-1 {
			flag = 0x01 // MORE
		}
		var hdr [9]byte
		n := 2
		if len(f) > 255 {
			hdr[0] = flag | 0x02 // LONG
			binary.BigEndian.PutUint64(hdr[1:], uint64(len(f)))
			n = 9
		} else {
			hdr[0], hdr[1] = flag, byte(len(f))
		}
		if _, err := p.w.Write(hdr[:n]); err != nil {
			return err
		}
		if _, err := p.w.Write(f); err != nil {
			return err
		}
	}
	return nil
}

// SeqFrame is an 8-byte big-endian sequence frame.
func SeqFrame(seq uint64) []byte { return seqFrame(seq) }

// Flush writes what is buffered.
func (p *FastPublisher) Flush() error { return p.w.Flush() }

// Close closes the connection and the listener.
func (p *FastPublisher) Close() {
	if p.conn != nil {
		p.conn.Close()
	}
	p.ln.Close()
}
