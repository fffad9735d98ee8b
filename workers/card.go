package workers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// This file decodes Dynamo's discovery entries in etcd (docs/api.md §1,
// docs/compat.md §6): the keys, the instance values and the model cards.
// Nothing here touches etcd; every function is pure and fuzzed.

// Roots of Dynamo's discovery buckets in etcd.
const (
	instancesRoot = "v1/instances/"
	cardsRoot     = "v1/mdc/"
)

// errMalformed is wrapped by every decoding error of a discovery key or
// value.
var errMalformed = errors.New("malformed")

// bucket is which of Dynamo's discovery buckets a key is in.
type bucket uint8

const (
	bucketInstances bucket = iota + 1
	bucketCards
)

// root returns the bucket's key prefix.
func (b bucket) root() string {
	if b == bucketCards {
		return cardsRoot
	}
	return instancesRoot
}

// kind returns the kind label of dynamo_component_router_discovery_malformed_total.
func (b bucket) kind() string {
	if b == bucketCards {
		return metrics.DiscoveryModelCard
	}
	return metrics.DiscoveryInstance
}

// key is a parsed discovery key:
//
//	v1/instances/{ns}/{component}/{endpoint}/{id hex}
//	v1/mdc/{ns}/{component}/{endpoint}/{id hex}[/{suffix}]
//
// Dynamo writes the id as lower-case hex, zero-padded to 16 digits in some
// versions and not in others; both parse. A card key may carry a suffix
// naming a LoRA adapter served by the same instance.
type key struct {
	bucket                         bucket
	namespace, component, endpoint string
	id                             indexer.WorkerID
	suffix                         string
}

// String renders the key in Dynamo's current form (unpadded hex).
func (k key) String() string {
	s := k.bucket.root() + k.namespace + "/" + k.component + "/" + k.endpoint + "/" + strconv.FormatUint(uint64(k.id), 16)
	if k.suffix != "" {
		s += "/" + k.suffix
	}
	return s
}

// bucketOf returns the bucket a raw key is in, if any.
func bucketOf(s string) (bucket, bool) {
	switch {
	case strings.HasPrefix(s, instancesRoot):
		return bucketInstances, true
	case strings.HasPrefix(s, cardsRoot):
		return bucketCards, true
	}
	return 0, false
}

// parseKey parses a discovery key.
func parseKey(s string) (key, error) {
	b, ok := bucketOf(s)
	if !ok {
		return key{}, fmt.Errorf("key %q: %w: not under %s or %s", s, errMalformed, instancesRoot, cardsRoot)
	}
	parts := strings.SplitN(s[len(b.root()):], "/", 5)
	if len(parts) < 4 {
		return key{}, fmt.Errorf("key %q: %w: want {namespace}/{component}/{endpoint}/{instance id} after %s", s, errMalformed, b.root())
	}
	if len(parts) == 5 && (b == bucketInstances || parts[4] == "") {
		return key{}, fmt.Errorf("key %q: %w: unexpected segments after the instance id", s, errMalformed)
	}
	for i, what := range []string{"namespace", "component", "endpoint"} {
		if parts[i] == "" {
			return key{}, fmt.Errorf("key %q: %w: empty %s", s, errMalformed, what)
		}
	}
	id, err := parseID(parts[3])
	if err != nil {
		return key{}, fmt.Errorf("key %q: %w", s, err)
	}
	k := key{bucket: b, namespace: parts[0], component: parts[1], endpoint: parts[2], id: id}
	if len(parts) == 5 {
		k.suffix = parts[4]
	}
	return k, nil
}

// parseID parses an instance id written in hex, at most 16 significant
// digits; signs, "0x" and underscores are refused.
func parseID(s string) (indexer.WorkerID, error) {
	if s == "" {
		return 0, fmt.Errorf("%w: empty instance id", errMalformed)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return 0, fmt.Errorf("%w: instance id %q is not hex", errMalformed, s)
		}
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: instance id %q: over 64 bits", errMalformed, s)
	}
	return indexer.WorkerID(v), nil
}

// header holds the fields that an instance value and a card value share,
// each checked against the key when present.
type header struct {
	Type       string  `json:"type"`
	Namespace  *string `json:"namespace"`
	Component  *string `json:"component"`
	Endpoint   *string `json:"endpoint"`
	InstanceID *uint64 `json:"instance_id"`
}

// check reports the first field that contradicts k, or a type other than
// want.
func (h header) check(k key, want string) error {
	if h.Type != "" && h.Type != want {
		return fmt.Errorf("%w: type %q, want %q", errMalformed, h.Type, want)
	}
	fields := []struct {
		name    string
		got     *string
		fromKey string
	}{
		{"namespace", h.Namespace, k.namespace},
		{"component", h.Component, k.component},
		{"endpoint", h.Endpoint, k.endpoint},
	}
	for _, f := range fields {
		if f.got != nil && *f.got != f.fromKey {
			return fmt.Errorf("%w: %s %q differs from the key's %q", errMalformed, f.name, *f.got, f.fromKey)
		}
	}
	if h.InstanceID != nil && indexer.WorkerID(*h.InstanceID) != k.id {
		return fmt.Errorf("%w: instance_id %d differs from the key's %d", errMalformed, *h.InstanceID, k.id)
	}
	return nil
}

// decodeInstance checks an instance value:
//
//	{"type":"Endpoint","namespace":..,"component":..,"endpoint":..,"instance_id":<u64>,"transport":{..}}
//
// The registry needs nothing from it but its existence; what is checked is
// that it is what it claims to be, for the key it sits under.
func decodeInstance(k key, data []byte) error {
	var h header
	if err := unmarshal(data, &h); err != nil {
		return err
	}
	return h.check(k, "Endpoint")
}

// card is what the router takes from a model card.
type card struct {
	// model is display_name.
	model string
	// blockSize is kv_cache_block_size; 0 when the card does not state it.
	blockSize int
	// The runtime_config counts; 0 when absent or null.
	totalKVBlocks, maxNumSeqs, maxNumBatchedTokens int
	// dpStart and dpSize are the data-parallel ranks (defaults 0 and 1).
	dpStart, dpSize uint32
}

// cardEnvelope is the value at a v1/mdc key: the header and the card itself.
type cardEnvelope struct {
	header
	CardJSON json.RawMessage `json:"card_json"`
	// Some Dynamo versions stored the card itself, with no envelope: its
	// fields then sit at the top level.
	cardJSON
}

// cardJSON is the part of Dynamo's ModelDeploymentCard the router reads.
type cardJSON struct {
	DisplayName      *string            `json:"display_name"`
	KVCacheBlockSize *int64             `json:"kv_cache_block_size"`
	RuntimeConfig    *runtimeConfigJSON `json:"runtime_config"`
}

// runtimeConfigJSON is Dynamo's ModelRuntimeConfig, in part. Every field is
// optional in Dynamo.
type runtimeConfigJSON struct {
	TotalKVBlocks         *uint64 `json:"total_kv_blocks"`
	MaxNumSeqs            *uint64 `json:"max_num_seqs"`
	MaxNumBatchedTokens   *uint64 `json:"max_num_batched_tokens"`
	DataParallelStartRank *uint64 `json:"data_parallel_start_rank"`
	DataParallelSize      *uint64 `json:"data_parallel_size"`
}

// decodeCard decodes a model card value:
//
//	{"type":"Model","namespace":..,"component":..,"endpoint":..,"instance_id":<u64>,
//	 "card_json":{"display_name":..,"kv_cache_block_size":<int>,"runtime_config":{..}}}
//
// card_json may also be a JSON string holding the card, and a value with no
// envelope at all (the card at the top level) is accepted as older Dynamo
// wrote it.
func decodeCard(k key, data []byte) (card, error) {
	var v cardEnvelope
	if err := unmarshal(data, &v); err != nil {
		return card{}, err
	}
	if err := v.header.check(k, "Model"); err != nil {
		return card{}, err
	}
	cj := v.cardJSON
	raw := bytes.TrimSpace(v.CardJSON)
	switch {
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return card{}, fmt.Errorf("%w: card_json: %v", errMalformed, err)
		}
		raw = []byte(s)
		fallthrough
	case len(raw) > 0:
		cj = cardJSON{}
		if err := unmarshal(raw, &cj); err != nil {
			return card{}, fmt.Errorf("card_json: %w", err)
		}
	case cj.DisplayName == nil && cj.KVCacheBlockSize == nil && cj.RuntimeConfig == nil:
		return card{}, fmt.Errorf("%w: no card_json", errMalformed)
	}
	return cj.card()
}

// card checks the card's numbers and fills defaults Dynamo gives.
func (cj cardJSON) card() (card, error) {
	c := card{dpSize: 1}
	if cj.DisplayName != nil {
		c.model = *cj.DisplayName
	}
	if b := cj.KVCacheBlockSize; b != nil {
		if *b < 0 || *b > MaxBlockSize {
			return card{}, fmt.Errorf("%w: kv_cache_block_size %d outside [0, %d]", errMalformed, *b, MaxBlockSize)
		}
		c.blockSize = int(*b)
	}
	rc := cj.RuntimeConfig
	if rc == nil {
		return c, nil
	}
	counts := []struct {
		name string
		v    *uint64
		dst  *int
	}{
		{"total_kv_blocks", rc.TotalKVBlocks, &c.totalKVBlocks},
		{"max_num_seqs", rc.MaxNumSeqs, &c.maxNumSeqs},
		{"max_num_batched_tokens", rc.MaxNumBatchedTokens, &c.maxNumBatchedTokens},
	}
	for _, n := range counts {
		if n.v == nil {
			continue
		}
		if *n.v > maxCount {
			return card{}, fmt.Errorf("%w: runtime_config.%s %d over %d", errMalformed, n.name, *n.v, uint64(maxCount))
		}
		*n.dst = int(*n.v)
	}
	start, size := uint64(0), uint64(1)
	if rc.DataParallelStartRank != nil {
		start = *rc.DataParallelStartRank
	}
	if rc.DataParallelSize != nil {
		size = *rc.DataParallelSize
	}
	if size < 1 || size > MaxDPSize {
		return card{}, fmt.Errorf("%w: runtime_config.data_parallel_size %d outside [1, %d]", errMalformed, size, MaxDPSize)
	}
	if start+size > 1<<32 {
		return card{}, fmt.Errorf("%w: runtime_config.data_parallel_start_rank %d + size %d over 2^32 ranks", errMalformed, start, size)
	}
	c.dpStart, c.dpSize = uint32(start), uint32(size)
	return c, nil
}

// unmarshal decodes a JSON object into v, wrapping every failure in
// errMalformed. A value that is not an object is refused before decoding, so
// that "null" or a bare number is not taken for an empty object.
func unmarshal(data []byte, v any) error {
	t := bytes.TrimSpace(data)
	if len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", errMalformed)
	}
	if err := json.Unmarshal(t, v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

// InstancePrefix returns the etcd prefix of the instances of one endpoint
// of a component: v1/instances/{ns}/{component}/{endpoint}/.
func InstancePrefix(namespace, component, endpoint string) string {
	return instancesRoot + namespace + "/" + component + "/" + endpoint + "/"
}

// InstanceKey returns the etcd key of instance id of an endpoint, the id
// in lower-case hex as Dynamo writes it.
func InstanceKey(namespace, component, endpoint string, id uint64) string {
	return InstancePrefix(namespace, component, endpoint) + strconv.FormatUint(id, 16)
}

// instanceRecord is the value of an instance key, as decodeInstance reads
// it.
type instanceRecord struct {
	Type       string            `json:"type"`
	Namespace  string            `json:"namespace"`
	Component  string            `json:"component"`
	Endpoint   string            `json:"endpoint"`
	InstanceID uint64            `json:"instance_id"`
	Transport  map[string]string `json:"transport"`
}

// InstanceValue returns the value of instance id's key, as Dynamo writes
// it, with subject as its NATS transport: what the simulated workers and
// the router's replicas register.
func InstanceValue(namespace, component, endpoint string, id uint64, subject string) []byte {
	b, _ := json.Marshal(instanceRecord{ // strings and a number: cannot fail
		Type: "Endpoint", Namespace: namespace, Component: component, Endpoint: endpoint,
		InstanceID: id, Transport: map[string]string{"nats_tcp": subject},
	})
	return b
}
