package workers

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/internal/jsonscan"
)

// This file decodes the workers file (--workers-file, docs/api.md §8): the
// workers of a fleet without Dynamo, which register nowhere. Nothing here
// reads the file or touches the registry; DecodeWorkersFile is pure and
// fuzzed (FuzzDecodeWorkersFile).

// Engines whose KV events a workers file may name (kv_events.engine).
const (
	EngineVLLM   = "vllm"
	EngineSGLang = "sglang"
)

// Limits of a workers file.
const (
	// MaxWorkersFileBytes bounds the file's size.
	MaxWorkersFileBytes = 16 << 20
	// MaxFileRanks bounds the data-parallel ranks of all the file's
	// workers together (so also the number of workers): each rank is a
	// scheduling candidate and, with kv_events, a subscription.
	MaxFileRanks = 1 << 16
	// maxFileString bounds a url, a topic and an endpoint.
	maxFileString = 2048
)

// ErrWorkersFile is wrapped by every error of DecodeWorkersFile and by
// every failure to read the workers file; its text, "workers file", starts
// their messages.
var ErrWorkersFile = errors.New("workers file")

// FileWorker is one worker of the workers file: what the registry makes a
// Worker of, and what an engine event source needs to subscribe to its KV
// events. It is a value; KVEvents, when set, is shared and must not be
// modified.
type FileWorker struct {
	// ID is worker_id, the worker's id in the index and in route replies;
	// never 0.
	ID indexer.WorkerID
	// Component is the router's worker component (a decode or aggregated
	// worker) or its prefill component (a prefill worker).
	Component string
	// BlockSize is the engine's KV block size in tokens (block_size). One
	// other than the router's is a block-size mismatch, as a model card's
	// is: registered, its overlaps not trusted.
	BlockSize int
	// DPSize is data_parallel_size: the worker's ranks are 0..DPSize-1
	// (default 1).
	DPSize int
	// TotalKVBlocks, MaxNumSeqs and MaxNumBatchedTokens are as in a model
	// card's runtime_config; 0 (or absent) leaves Config.Defaults to stand
	// in.
	TotalKVBlocks, MaxNumSeqs, MaxNumBatchedTokens int
	// URL is url, where the engine serves (say its OpenAI server), echoed
	// in route replies as worker_url; "" when the file gives none.
	URL string
	// KVEvents says where the engine publishes its KV events; nil when the
	// file gives none (the worker is then routed to by load only, unless
	// its events reach the router another way).
	KVEvents *KVEventsConfig
}

// KVEventsConfig is a file worker's kv_events: the engine's ZMQ publisher
// (docs/api.md §8). Rank r of a data-parallel worker publishes on
// Endpoint's port + r, and replays on ReplayEndpoint's port + r.
type KVEventsConfig struct {
	// Endpoint is the publisher, tcp://host:port or ipc://path
	// (required).
	Endpoint string
	// ReplayEndpoint is the engine's replay socket, in the same forms; ""
	// when the engine has none.
	ReplayEndpoint string
	// Topic is the topic frame the engine publishes with; "" matches all.
	Topic string
	// Engine is EngineVLLM or EngineSGLang (required).
	Engine string
}

// EngineSink learns the workers file's workers whose KV events the router
// must subscribe to itself: the engine event source. The registry calls
// SetFileWorkers after every successful load of the file, and whenever the
// set it accepts from the file changes (a worker id that etcd also
// registers is refused from the file while etcd has it), with the whole
// accepted set, sorted by id. The slice is the sink's to keep; the
// KVEventsConfig values it points to must not be modified. It is called
// with the registry's lock held, after the workers it names joined (and
// after those it no longer names left): it must return quickly, never
// block, and never call back into the Registry.
type EngineSink interface {
	SetFileWorkers(ws []FileWorker)
}

// fileError builds an error of the workers file: "workers file: " and the
// message.
func fileError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrWorkersFile, fmt.Sprintf(format, args...))
}

// DecodeWorkersFile decodes a workers file and checks it against cfg:
//
//	{"workers": [{"worker_id": 26, "component": "backend", "block_size": 16,
//	  "data_parallel_size": 1, "total_kv_blocks": 8192, "max_num_seqs": 256,
//	  "max_num_batched_tokens": 8192, "url": "http://10.0.0.5:8000",
//	  "kv_events": {"endpoint": "tcp://10.0.0.5:5557", "replay_endpoint": "tcp://10.0.0.5:5558",
//	                "topic": "", "engine": "vllm"}}]}
//
// worker_id, component and block_size are required, and in kv_events,
// endpoint and engine; a field set to null counts as absent. Decoding is
// strict and whole: an unknown or repeated field, a value of the wrong
// type or out of range, a worker id of 0 or given twice, a component that
// is neither cfg.Component nor cfg.PrefillComponent, an endpoint that is
// not tcp://host:port or ipc://path, or two ranks on one
// address refuse the whole file with an error wrapping ErrWorkersFile that
// names the entry and the field, such as
//
//	workers file: workers[2].kv_events.endpoint: "tcp://x" has no port
//
// The workers come back in the file's order.
func DecodeWorkersFile(data []byte, cfg Config) ([]FileWorker, error) {
	if len(data) > MaxWorkersFileBytes {
		return nil, fileError("%d bytes, over the limit of %d", len(data), MaxWorkersFileBytes)
	}
	d := fileDecoder{s: jsonscan.New(data), cfg: cfg}
	ws, err := d.file()
	if err != nil {
		return nil, scanError(data, err)
	}
	if err := checkAddresses(ws); err != nil {
		return nil, err
	}
	return ws, nil
}

// scanError turns an error of the scanner into a workers-file error (others
// pass through). A wrong type in a file that is not JSON at all is
// reported as the syntax error, the worse of the two.
func scanError(data []byte, err error) error {
	se, ok := jsonscan.Cause(data, err)
	if !ok {
		return err
	}
	if se.Kind == jsonscan.Syntax {
		return fileError("malformed JSON at byte %d: %s", se.Offset, se.Detail())
	}
	return fileError("%s", se.Detail())
}

// fileDecoder reads one workers file.
type fileDecoder struct {
	s   jsonscan.Scanner
	cfg Config
	// ids maps each worker id read so far to its entry.
	ids map[indexer.WorkerID]int
	// ranks counts the ranks read so far.
	ranks int
}

// file reads the top-level object.
func (d *fileDecoder) file() ([]FileWorker, error) {
	if err := d.s.Object("", "a JSON object"); err != nil {
		return nil, err
	}
	var ws []FileWorker
	seen := false
	for first := true; ; first = false {
		key, ok, err := d.s.Key("", first)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if string(key) != "workers" {
			return nil, fileError("unknown field %q (a workers file has only \"workers\")", key)
		}
		if seen {
			return nil, fileError("workers: given twice")
		}
		seen = true
		if ws, err = d.workers(); err != nil {
			return nil, err
		}
	}
	if err := d.s.End("the workers file"); err != nil {
		return nil, err
	}
	if !seen {
		return nil, fileError(`workers: missing (want {"workers": [...]})`)
	}
	return ws, nil
}

// workers reads the workers array.
func (d *fileDecoder) workers() ([]FileWorker, error) {
	ws := []FileWorker{}
	if d.s.Null() {
		return ws, nil
	}
	if err := d.s.Array("workers", "an array of workers"); err != nil {
		return nil, err
	}
	d.ids = map[indexer.WorkerID]int{}
	for i := 0; ; i++ {
		more, err := d.s.Elem("workers", i == 0)
		if err != nil {
			return nil, err
		}
		if !more {
			return ws, nil
		}
		w, err := d.worker(i)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
}

// Fields of a worker entry and of its kv_events, as bits, to refuse a
// field given twice and to find the required ones missing.
const (
	fWorkerID uint16 = 1 << iota
	fComponent
	fBlockSize
	fDPSize
	fTotalKVBlocks
	fMaxNumSeqs
	fMaxNumBatchedTokens
	fURL
	fKVEvents
	fEndpoint
	fReplayEndpoint
	fTopic
	fEngine
)

// fieldBit returns the bit of a field's name among names, 0 for an unknown
// field.
func fieldBit(key []byte, names []fieldName) uint16 {
	for _, n := range names {
		if string(key) == n.name {
			return n.bit
		}
	}
	return 0
}

type fieldName struct {
	name string
	bit  uint16
}

var (
	workerFields = []fieldName{
		{"worker_id", fWorkerID}, {"component", fComponent}, {"block_size", fBlockSize},
		{"data_parallel_size", fDPSize}, {"total_kv_blocks", fTotalKVBlocks}, {"max_num_seqs", fMaxNumSeqs},
		{"max_num_batched_tokens", fMaxNumBatchedTokens}, {"url", fURL}, {"kv_events", fKVEvents},
	}
	kvEventsFields = []fieldName{
		{"endpoint", fEndpoint}, {"replay_endpoint", fReplayEndpoint}, {"topic", fTopic}, {"engine", fEngine},
	}
)

// names lists the names of fields, for messages.
func names(fields []fieldName) string {
	s := make([]string, len(fields))
	for i, f := range fields {
		s[i] = f.name
	}
	return strings.Join(s, ", ")
}

// object reads an object of known fields, calling field for each that is
// not null, and returns the set of fields given (null ones excluded).
func (d *fileDecoder) object(path, want string, fields []fieldName, field func(bit uint16, f string) error) (uint16, error) {
	if err := d.s.Object(path, want); err != nil {
		return 0, err
	}
	var seen, given uint16
	for first := true; ; first = false {
		key, ok, err := d.s.Key(path, first)
		if err != nil {
			return 0, err
		}
		if !ok {
			return given, nil
		}
		bit := fieldBit(key, fields)
		if bit == 0 {
			return 0, fileError("%s: unknown field %q (allowed %s)", path, key, names(fields))
		}
		f := path + "." + string(key)
		if seen&bit != 0 {
			return 0, fileError("%s: given twice", f)
		}
		seen |= bit
		if d.s.Null() {
			continue
		}
		given |= bit
		if err := field(bit, f); err != nil {
			return 0, err
		}
	}
}

// missing returns the error of the first required field not given.
func missing(path string, given uint16, required []fieldName) error {
	for _, r := range required {
		if given&r.bit == 0 {
			return fileError("%s.%s: missing (required)", path, r.name)
		}
	}
	return nil
}

// worker reads and checks entry i.
func (d *fileDecoder) worker(i int) (FileWorker, error) {
	path := "workers[" + strconv.Itoa(i) + "]"
	w := FileWorker{DPSize: 1}
	given, err := d.object(path, "a worker object", workerFields, func(bit uint16, f string) error {
		var err error
		switch bit {
		case fWorkerID:
			var id uint64
			if id, err = d.s.Uint(f, math.MaxUint64); err == nil && id == 0 {
				err = fileError("%s: 0 is not a worker id", f)
			}
			w.ID = indexer.WorkerID(id)
		case fComponent:
			w.Component, err = d.str(f)
		case fBlockSize:
			w.BlockSize, err = d.int(f, 1, MaxBlockSize)
		case fDPSize:
			w.DPSize, err = d.int(f, 1, MaxDPSize)
		case fTotalKVBlocks:
			w.TotalKVBlocks, err = d.int(f, 0, maxCount)
		case fMaxNumSeqs:
			w.MaxNumSeqs, err = d.int(f, 0, maxCount)
		case fMaxNumBatchedTokens:
			w.MaxNumBatchedTokens, err = d.int(f, 0, maxCount)
		case fURL:
			w.URL, err = d.str(f)
			if err == nil {
				err = checkURL(f, w.URL)
			}
		case fKVEvents:
			w.KVEvents, err = d.kvEvents(f)
		}
		return err
	})
	if err != nil {
		return FileWorker{}, err
	}
	required := []fieldName{workerFields[0], workerFields[1], workerFields[2]}
	if err := missing(path, given, required); err != nil {
		return FileWorker{}, err
	}
	if prev, dup := d.ids[w.ID]; dup {
		return FileWorker{}, fileError("%s.worker_id: %d is also workers[%d]'s", path, w.ID, prev)
	}
	d.ids[w.ID] = i
	if w.Component != d.cfg.Component && w.Component != d.cfg.PrefillComponent {
		return FileWorker{}, fileError("%s.component: %q is neither the worker component %q (--component) nor the prefill component %q (--prefill-component)",
			path, w.Component, d.cfg.Component, d.cfg.PrefillComponent)
	}
	if d.ranks += w.DPSize; d.ranks > MaxFileRanks {
		return FileWorker{}, fileError("%s.data_parallel_size: the file's workers have more than %d ranks together", path, MaxFileRanks)
	}
	if w.KVEvents != nil {
		if err := checkRanks(path+".kv_events", w.KVEvents, w.DPSize); err != nil {
			return FileWorker{}, err
		}
	}
	return w, nil
}

// kvEvents reads a worker's kv_events object at path f.
func (d *fileDecoder) kvEvents(f string) (*KVEventsConfig, error) {
	var kv KVEventsConfig
	given, err := d.object(f, "a kv_events object", kvEventsFields, func(bit uint16, g string) error {
		var err error
		switch bit {
		case fEndpoint:
			if kv.Endpoint, err = d.str(g); err == nil {
				_, err = parseEndpoint(g, kv.Endpoint)
			}
		case fReplayEndpoint:
			if kv.ReplayEndpoint, err = d.str(g); err == nil {
				_, err = parseEndpoint(g, kv.ReplayEndpoint)
			}
		case fTopic:
			kv.Topic, err = d.str(g)
		case fEngine:
			if kv.Engine, err = d.str(g); err == nil && kv.Engine != EngineVLLM && kv.Engine != EngineSGLang {
				err = fileError("%s: %q is not an engine (allowed %s, %s)", g, kv.Engine, EngineVLLM, EngineSGLang)
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := missing(f, given, []fieldName{kvEventsFields[0], kvEventsFields[3]}); err != nil {
		return nil, err
	}
	return &kv, nil
}

// str reads a string of at most maxFileString bytes.
func (d *fileDecoder) str(f string) (string, error) {
	v, err := d.s.String(f)
	if err == nil && len(v) > maxFileString {
		return "", fileError("%s: %d bytes, over the limit of %d", f, len(v), maxFileString)
	}
	return v, err
}

// int reads an integer in [lo, hi].
func (d *fileDecoder) int(f string, lo, hi int) (int, error) {
	neg := d.s.Peek() == '-'
	v, err := d.s.Int(f, true)
	switch {
	case err != nil:
		return 0, err
	case neg:
		return 0, fileError("%s: %d is out of range (allowed %d..%d)", f, int64(v), lo, hi)
	case v < uint64(lo) || v > uint64(hi):
		return 0, fileError("%s: %d is out of range (allowed %d..%d)", f, v, lo, hi)
	}
	return int(v), nil
}

// checkURL checks a worker's url: an absolute http:// or https:// URL.
func checkURL(f, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fileError("%s: %q is not an http:// or https:// URL", f, s)
	}
	return nil
}

// endpoint is a parsed ZMQ endpoint: a tcp host and port, or the whole
// ipc:// address (port 0).
type endpoint struct {
	host string
	port int
}

// parseEndpoint checks a ZMQ endpoint the router connects to, at field f.
func parseEndpoint(f, s string) (endpoint, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	switch {
	case !ok:
	case scheme == "tcp":
		host, port, err := net.SplitHostPort(rest)
		switch {
		case err != nil && !strings.Contains(rest, ":"):
			return endpoint{}, fileError("%s: %q has no port", f, s)
		case err != nil:
			return endpoint{}, fileError("%s: %q is not tcp://host:port", f, s)
		case host == "":
			return endpoint{}, fileError("%s: %q has no host", f, s)
		case host == "*" || unspecified(host):
			return endpoint{}, fileError("%s: %q is an address to bind, not to connect to: give the engine's host", f, s)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return endpoint{}, fileError("%s: %q: port %q is not a number from 1 to 65535", f, s, port)
		}
		return endpoint{host: host, port: p}, nil
	case scheme == "ipc":
		if rest == "" {
			return endpoint{}, fileError("%s: %q names no path", f, s)
		}
		return endpoint{host: s}, nil
	case scheme == "inproc":
		return endpoint{}, fileError("%s: %q: an inproc:// endpoint is reachable only inside the engine's process; give tcp://host:port or ipc://path", f, s)
	}
	return endpoint{}, fileError("%s: %q is not tcp://host:port or ipc://path", f, s)
}

// unspecified reports whether host is an IP address that means "every
// interface" (0.0.0.0, ::): an address to bind.
func unspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// rankAddr returns an address naming rank r of an endpoint, for
// comparisons: host and port + r, or for ipc:// the path,
// with _dp{r} appended from rank 1 on.
func (e endpoint) rankAddr(r int) string {
	switch {
	case e.port != 0:
		return net.JoinHostPort(e.host, strconv.Itoa(e.port+r))
	case r == 0:
		return e.host
	}
	return e.host + "_dp" + strconv.Itoa(r)
}

// checkRanks checks that every rank of a worker with dpSize ranks has a
// port (port + rank ≤ 65535) for its publisher and its replay socket.
func checkRanks(path string, kv *KVEventsConfig, dpSize int) error {
	for _, f := range []struct{ name, v string }{{"endpoint", kv.Endpoint}, {"replay_endpoint", kv.ReplayEndpoint}} {
		if f.v == "" {
			continue
		}
		e, _ := parseEndpoint("", f.v) // checked when read
		if e.port != 0 && e.port+dpSize-1 > 65535 {
			return fileError("%s.%s: %q leaves no port for rank %d (rank r uses port + r; data_parallel_size %d)",
				path, f.name, f.v, dpSize-1, dpSize)
		}
	}
	return nil
}

// checkAddresses refuses two ranks (of one worker or of two) on one
// address, publisher or replay socket: one engine's events would be taken
// for another's. Addresses are compared as written; two names of one host
// are not caught.
func checkAddresses(ws []FileWorker) error {
	type use struct {
		worker int
		field  string
	}
	seen := map[string]use{}
	for i, w := range ws {
		if w.KVEvents == nil {
			continue
		}
		for _, f := range []struct{ name, v string }{{"endpoint", w.KVEvents.Endpoint}, {"replay_endpoint", w.KVEvents.ReplayEndpoint}} {
			if f.v == "" {
				continue
			}
			e, _ := parseEndpoint("", f.v) // checked when read
			for r := 0; r < w.DPSize; r++ {
				a := e.rankAddr(r)
				if prev, dup := seen[a]; dup {
					return fileError("workers[%d].kv_events.%s: %q (rank %d) is also workers[%d].kv_events.%s's",
						i, f.name, a, r, prev.worker, prev.field)
				}
				seen[a] = use{i, f.name}
			}
		}
	}
	return nil
}
