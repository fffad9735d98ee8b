package zmqtest

import (
	"encoding/binary"

	"github.com/vmihailenco/msgpack/v5"
)

// PlaneMessage returns the four frames of one message of Dynamo's ZMQ event
// plane: the topic, the publisher id and the sequence (8 bytes big-endian
// each), and the frame: a version byte 1, the envelope's length (4 bytes
// big-endian) and the MessagePack envelope whose payload is routerEvent
// (a RouterEvent, JSON or MessagePack).
func PlaneMessage(topic string, publisherID, seq uint64, routerEvent []byte) [][]byte {
	env, err := msgpack.Marshal(orderedMap{
		{"publisher_id", publisherID}, {"sequence", seq}, {"published_at", uint64(1767225600500)},
		{"topic", topic}, {"payload", routerEvent},
	})
	if err != nil {
		panic(err) // only values this function builds
	}
	frame := make([]byte, 5, 5+len(env))
	frame[0] = 1
	binary.BigEndian.PutUint32(frame[1:], uint32(len(env)))
	frame = append(frame, env...)
	return [][]byte{[]byte(topic), seqFrame(publisherID), seqFrame(seq), frame}
}
