package zmqevents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// KVEventsTopic is the topic of KV events on Dynamo's event plane: the
// discovery key's segment and the first frame of every message.
const KVEventsTopic = "kv-events"

// namespacePrefix is the etcd prefix of every event channel of namespace.
func namespacePrefix(namespace string) string { return "v1/event_channels/" + namespace + "/" }

// ChannelPrefix is the etcd prefix under which Dynamo's publishers of a
// component's KV events register their event channels:
// v1/event_channels/{namespace}/{component}/kv-events/.
func ChannelPrefix(namespace, component string) string {
	return namespacePrefix(namespace) + component + "/" + KVEventsTopic + "/"
}

// Channel is a decoded event-channel record of Dynamo's discovery.
type Channel struct {
	InstanceID uint64
	Endpoint   string
}

// channelRecord is the JSON of an event-channel record.
type channelRecord struct {
	Type       string          `json:"type"`
	Namespace  string          `json:"namespace"`
	Component  string          `json:"component"`
	Topic      string          `json:"topic"`
	InstanceID *uint64         `json:"instance_id"`
	Transport  json.RawMessage `json:"transport"`
}

type channelTransport struct {
	Kind   string `json:"kind"`
	Config struct {
		Endpoint string `json:"endpoint"`
	} `json:"config"`
}

// maxChannelBytes caps a record: Dynamo's are a few hundred bytes.
const maxChannelBytes = 64 << 10

// ParseChannel decodes the value of an event-channel key of namespace and
// component, checking that it names them, the kv-events topic, the
// instance id of the key's last segment (lower-case hex) and a ZMQ
// transport with a tcp:// or ipc:// endpoint. Unknown fields are ignored:
// Dynamo adds fields between releases.
func ParseChannel(namespace, component, key string, value []byte) (Channel, error) {
	prefix := ChannelPrefix(namespace, component)
	seg, ok := strings.CutPrefix(key, prefix)
	if !ok || seg == "" || strings.Contains(seg, "/") {
		return Channel{}, fmt.Errorf("event channel key %q: want %s{instance id in hex}", key, prefix)
	}
	keyID, err := strconv.ParseUint(seg, 16, 64)
	if err != nil {
		return Channel{}, fmt.Errorf("event channel key %q: instance id %q is not hexadecimal", key, seg)
	}
	if len(value) > maxChannelBytes {
		return Channel{}, fmt.Errorf("event channel %s: %d bytes, over the %d-byte limit", key, len(value), maxChannelBytes)
	}
	var r channelRecord
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil {
		return Channel{}, fmt.Errorf("event channel %s: %v", key, err)
	}
	if dec.More() {
		return Channel{}, fmt.Errorf("event channel %s: data after the record", key)
	}
	var t channelTransport
	switch {
	case r.Type != "EventChannel":
		return Channel{}, fmt.Errorf("event channel %s: type: %q, want \"EventChannel\"", key, r.Type)
	case r.Namespace != namespace:
		return Channel{}, fmt.Errorf("event channel %s: namespace: %q, want %q", key, r.Namespace, namespace)
	case r.Component != component:
		return Channel{}, fmt.Errorf("event channel %s: component: %q, want %q", key, r.Component, component)
	case r.Topic != KVEventsTopic:
		return Channel{}, fmt.Errorf("event channel %s: topic: %q, want %q", key, r.Topic, KVEventsTopic)
	case r.InstanceID == nil:
		return Channel{}, fmt.Errorf("event channel %s: instance_id: missing", key)
	case *r.InstanceID != keyID:
		return Channel{}, fmt.Errorf("event channel %s: instance_id: %d, the key says %d", key, *r.InstanceID, keyID)
	case len(r.Transport) == 0:
		return Channel{}, fmt.Errorf("event channel %s: transport: missing", key)
	}
	if err := json.Unmarshal(r.Transport, &t); err != nil {
		return Channel{}, fmt.Errorf("event channel %s: transport: %v", key, err)
	}
	if t.Kind != "Zmq" {
		return Channel{}, fmt.Errorf("event channel %s: transport.kind: %q, want \"Zmq\"", key, t.Kind)
	}
	if err := CheckAddr(t.Config.Endpoint); err != nil {
		return Channel{}, fmt.Errorf("event channel %s: transport.config.endpoint: %v", key, err)
	}
	return Channel{InstanceID: keyID, Endpoint: t.Config.Endpoint}, nil
}

// CheckAddr checks a ZMQ address the router can dial: tcp://host:port with
// a port in 1..65535, or ipc://path.
func CheckAddr(addr string) error {
	switch {
	case strings.HasPrefix(addr, "tcp://"):
		hp := addr[len("tcp://"):]
		i := strings.LastIndexByte(hp, ':')
		if i <= 0 {
			return fmt.Errorf("%q has no host:port", addr)
		}
		host, port := hp[:i], hp[i+1:]
		if host == "*" {
			return fmt.Errorf("%q is a bind address; give the address to connect to", addr)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("%q: port %q is not in 1..65535", addr, port)
		}
		return nil
	case strings.HasPrefix(addr, "ipc://") && len(addr) > len("ipc://"):
		return nil
	}
	return fmt.Errorf("%q: want tcp://host:port or ipc://path", addr)
}

// Plane discovers the publishers of Dynamo's ZMQ event plane in etcd and
// keeps a Source's "event-plane" group in step with them: a record that
// appears is dialled, one that goes (its lease expired with its worker) is
// disconnected.
type Plane struct {
	cli        *clientv3.Client
	src        *Source
	namespace  string
	components []string
	timeout    time.Duration
	malformed  prometheus.Counter
	log        *slog.Logger
}

// PlaneGroup is the Source group Plane sets.
const PlaneGroup = "event-plane"

// NewPlane returns a discovery of the KV-event channels of the given
// components of namespace, through cli, feeding src. It starts nothing.
func NewPlane(cli *clientv3.Client, src *Source, namespace string, components []string, m *metrics.Router, log *slog.Logger) (*Plane, error) {
	if cli == nil || src == nil || m == nil {
		return nil, errors.New("zmq event plane: nil etcd client, source or metrics")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mal, err := m.DiscoveryMalformed()
	if err != nil {
		return nil, fmt.Errorf("zmq event plane: %w", err)
	}
	return &Plane{
		cli: cli, src: src, namespace: namespace, components: components, timeout: 5 * time.Second,
		malformed: mal.WithLabelValues(metrics.DiscoveryEventChannel), log: log,
	}, nil
}

// Run lists and watches the channels until ctx ends, listing again with
// backoff whenever the watch breaks. It returns nil.
func (p *Plane) Run(ctx context.Context) error {
	delay := 100 * time.Millisecond
	for {
		err := p.follow(ctx)
		if ctx.Err() != nil {
			return nil
		}
		p.log.Warn("zmq event plane: discovery watch ended; listing again", slog.Any("error", err))
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, 5*time.Second)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// follow lists the namespace's event channels at one revision, then
// applies the watch's changes until it breaks. One prefix covers every
// component; put keeps the records of the components followed and skips
// the others.
func (p *Plane) follow(ctx context.Context) error {
	prefix := namespacePrefix(p.namespace)
	lctx, cancel := context.WithTimeout(ctx, p.timeout)
	resp, err := p.cli.Get(lctx, prefix, clientv3.WithPrefix())
	cancel()
	if err != nil {
		return fmt.Errorf("list event channels: %w", err)
	}
	chans := make(map[string]Channel)
	for _, kv := range resp.Kvs {
		p.put(chans, string(kv.Key), kv.Value)
	}
	p.publish(chans)
	wctx, stop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer stop()
	wch := p.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				if ev.Type == clientv3.EventTypeDelete {
					delete(chans, key)
				} else {
					p.put(chans, key, ev.Kv.Value)
				}
			}
			p.publish(chans)
		}
	}
}

// put decodes one record into chans, or counts and logs it and drops the
// key's previous record.
func (p *Plane) put(chans map[string]Channel, key string, value []byte) {
	for _, c := range p.components {
		if strings.HasPrefix(key, ChannelPrefix(p.namespace, c)) {
			ch, err := ParseChannel(p.namespace, c, key, value)
			if err != nil {
				delete(chans, key)
				p.malformed.Inc()
				p.log.Warn("zmq event plane: skipping a malformed event channel record", slog.Any("error", err))
				return
			}
			chans[key] = ch
			return
		}
	}
}

// publish hands the channels to the Source.
func (p *Plane) publish(chans map[string]Channel) {
	eps := make([]Endpoint, 0, len(chans))
	for _, ch := range chans {
		eps = append(eps, Endpoint{
			Rank: indexer.Worker{ID: indexer.WorkerID(ch.InstanceID)}, Addr: ch.Endpoint,
			Topic: KVEventsTopic, Engine: EngineDynamo,
		})
	}
	p.src.Set(PlaneGroup, eps)
}
