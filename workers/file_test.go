package workers

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kvrouter/router/indexer"
)

// fileConfig is the configuration the workers file tests decode against:
// Dynamo's components and a block size of 16.
func fileConfig() Config {
	cfg := testConfig()
	cfg.BlockSize = 16
	return cfg
}

// The example of docs/api.md §8, every field given.
const exampleFile = `{"workers": [
  {"worker_id": 26, "component": "backend", "block_size": 16, "data_parallel_size": 2,
   "total_kv_blocks": 8192, "max_num_seqs": 256, "max_num_batched_tokens": 8192, "url": "http://10.0.0.5:8000",
   "kv_events": {"endpoint": "tcp://10.0.0.5:5557", "replay_endpoint": "tcp://10.0.0.5:5560", "topic": "kv", "engine": "vllm"}},
  {"worker_id": 27, "component": "prefill", "block_size": 32, "url": null,
   "kv_events": {"endpoint": "ipc:///tmp/kv27", "engine": "sglang"}},
  {"worker_id": 18446744073709551615, "component": "backend", "block_size": 16}
]}`

func TestDecodeWorkersFile(t *testing.T) {
	ws, err := DecodeWorkersFile([]byte(exampleFile), fileConfig())
	if err != nil {
		t.Fatal(err)
	}
	want := []FileWorker{
		{ID: 26, Component: "backend", BlockSize: 16, DPSize: 2, TotalKVBlocks: 8192, MaxNumSeqs: 256, MaxNumBatchedTokens: 8192,
			URL: "http://10.0.0.5:8000", KVEvents: &KVEventsConfig{Endpoint: "tcp://10.0.0.5:5557", ReplayEndpoint: "tcp://10.0.0.5:5560", Topic: "kv", Engine: EngineVLLM}},
		{ID: 27, Component: "prefill", BlockSize: 32, DPSize: 1, KVEvents: &KVEventsConfig{Endpoint: "ipc:///tmp/kv27", Engine: EngineSGLang}},
		{ID: 1<<64 - 1, Component: "backend", BlockSize: 16, DPSize: 1},
	}
	if diff := cmp.Diff(want, ws); diff != "" {
		t.Errorf("workers (-want +got):\n%s", diff)
	}
	// An empty list, and a null one, are files without workers.
	for _, f := range []string{`{"workers": []}`, `{"workers": null}`} {
		if ws, err := DecodeWorkersFile([]byte(f), fileConfig()); err != nil || ws == nil || len(ws) != 0 {
			t.Errorf("%s: %v, %v; want no workers", f, ws, err)
		}
	}
}

// oneWorker returns a workers file of one worker: a valid entry with the
// fields of extra added or, where extra names one, replaced (raw JSON).
func oneWorker(extra string) string {
	return `{"workers": [{"worker_id": 1, "component": "backend", "block_size": 16` + extra + `}]}`
}

// Every bad file is refused whole with a message naming the entry and the
// field.
func TestDecodeWorkersFileRefuses(t *testing.T) {
	kv := func(fields string) string { return oneWorker(`, "kv_events": {` + fields + `}`) }
	tests := []struct {
		name, file, want string
	}{
		{"empty", ``, `workers file: malformed JSON at byte 0: unexpected end of input`},
		{"not an object", `[]`, `workers file: expected a JSON object, found an array`},
		{"not JSON", `{"workers": [}`, `workers file: malformed JSON at byte 13: unexpected '}'`},
		{"trailing data", `{"workers": []} x`, `workers file: malformed JSON at byte 16: data after the workers file`},
		{"unknown top-level field", `{"workers": [], "version": 1}`, `workers file: unknown field "version" (a workers file has only "workers")`},
		{"no workers", `{}`, `workers file: workers: missing (want {"workers": [...]})`},
		{"workers twice", `{"workers": [], "workers": []}`, `workers file: workers: given twice`},
		{"workers not an array", `{"workers": {}}`, `workers file: workers: expected an array of workers, found an object`},
		{"entry not an object", `{"workers": [7]}`, `workers file: workers[0]: expected a worker object, found a number`},
		{"unknown field", oneWorker(`, "gpu": "h100"`),
			`workers file: workers[0]: unknown field "gpu" (allowed worker_id, component, block_size, data_parallel_size, total_kv_blocks, max_num_seqs, max_num_batched_tokens, url, kv_events)`},
		{"field twice", oneWorker(`, "block_size": 16`), `workers file: workers[0].block_size: given twice`},
		{"missing worker_id", `{"workers": [{"component": "backend", "block_size": 16}]}`, `workers file: workers[0].worker_id: missing (required)`},
		{"null worker_id", `{"workers": [{"worker_id": null, "component": "backend", "block_size": 16}]}`, `workers file: workers[0].worker_id: missing (required)`},
		{"missing component", `{"workers": [{"worker_id": 1, "block_size": 16}]}`, `workers file: workers[0].component: missing (required)`},
		{"missing block_size", `{"workers": [{"worker_id": 1, "component": "backend"}]}`, `workers file: workers[0].block_size: missing (required)`},
		{"worker_id 0", `{"workers": [{"worker_id": 0, "component": "backend", "block_size": 16}]}`, `workers file: workers[0].worker_id: 0 is not a worker id`},
		{"worker_id a string", `{"workers": [{"worker_id": "26", "component": "backend", "block_size": 16}]}`,
			`workers file: workers[0].worker_id: expected an integer, found a string`},
		{"worker_id negative", `{"workers": [{"worker_id": -1, "component": "backend", "block_size": 16}]}`,
			`workers file: workers[0].worker_id: expected an unsigned integer, found -1`},
		{"worker_id over 64 bits", `{"workers": [{"worker_id": 18446744073709551616, "component": "backend", "block_size": 16}]}`,
			`workers file: workers[0].worker_id: 18446744073709551616 is out of the range of u64`},
		{"worker_id repeated", `{"workers": [{"worker_id": 5, "component": "backend", "block_size": 16}, {"worker_id": 6, "component": "backend", "block_size": 16}, {"worker_id": 5, "component": "prefill", "block_size": 16}]}`,
			`workers file: workers[2].worker_id: 5 is also workers[0]'s`},
		{"component of another router", oneWorker(`, "component": "decode"`), `workers file: workers[0].component: given twice`},
		{"component unknown", `{"workers": [{"worker_id": 1, "component": "decode", "block_size": 16}]}`,
			`workers file: workers[0].component: "decode" is neither the worker component "backend" (--component) nor the prefill component "prefill" (--prefill-component)`},
		{"block_size 0", `{"workers": [{"worker_id": 1, "component": "backend", "block_size": 0}]}`, `workers file: workers[0].block_size: 0 is out of range (allowed 1..1048576)`},
		{"block_size negative", `{"workers": [{"worker_id": 1, "component": "backend", "block_size": -16}]}`, `workers file: workers[0].block_size: -16 is out of range (allowed 1..1048576)`},
		{"block_size a fraction", `{"workers": [{"worker_id": 1, "component": "backend", "block_size": 16.5}]}`,
			`workers file: workers[0].block_size: expected an integer, found a number with a fraction or exponent`},
		{"data_parallel_size 0", oneWorker(`, "data_parallel_size": 0`), `workers file: workers[0].data_parallel_size: 0 is out of range (allowed 1..4096)`},
		{"data_parallel_size too big", oneWorker(`, "data_parallel_size": 4097`), `workers file: workers[0].data_parallel_size: 4097 is out of range (allowed 1..4096)`},
		{"total_kv_blocks huge", oneWorker(`, "total_kv_blocks": 18446744073709551615`),
			`workers file: workers[0].total_kv_blocks: 18446744073709551615 is out of range (allowed 0..281474976710656)`},
		{"max_num_seqs a bool", oneWorker(`, "max_num_seqs": true`), `workers file: workers[0].max_num_seqs: expected an integer, found a boolean`},
		{"url not http", oneWorker(`, "url": "10.0.0.5:8000"`), `workers file: workers[0].url: "10.0.0.5:8000" is not an http:// or https:// URL`},
		{"url without host", oneWorker(`, "url": "http://"`), `workers file: workers[0].url: "http://" is not an http:// or https:// URL`},
		{"url a number", oneWorker(`, "url": 8000`), `workers file: workers[0].url: expected a string, found a number`},
		{"url too long", oneWorker(`, "url": "http://h/` + strings.Repeat("a", 2048) + `"`), `workers file: workers[0].url: 2057 bytes, over the limit of 2048`},
		{"kv_events not an object", oneWorker(`, "kv_events": "tcp://h:1"`), `workers file: workers[0].kv_events: expected a kv_events object, found a string`},
		{"kv_events unknown field", kv(`"endpoint": "tcp://h:1", "engine": "vllm", "hwm": 10`),
			`workers file: workers[0].kv_events: unknown field "hwm" (allowed endpoint, replay_endpoint, topic, engine)`},
		{"kv_events without endpoint", kv(`"engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: missing (required)`},
		{"kv_events without engine", kv(`"endpoint": "tcp://h:1"`), `workers file: workers[0].kv_events.engine: missing (required)`},
		{"engine unknown", kv(`"endpoint": "tcp://h:1", "engine": "trtllm"`), `workers file: workers[0].kv_events.engine: "trtllm" is not an engine (allowed vllm, sglang)`},
		{"engine in capitals", kv(`"endpoint": "tcp://h:1", "engine": "VLLM"`), `workers file: workers[0].kv_events.engine: "VLLM" is not an engine (allowed vllm, sglang)`},
		{"endpoint without port", kv(`"endpoint": "tcp://x", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "tcp://x" has no port`},
		{"endpoint without host", kv(`"endpoint": "tcp://:5557", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "tcp://:5557" has no host`},
		{"endpoint to bind", kv(`"endpoint": "tcp://*:5557", "engine": "vllm"`),
			`workers file: workers[0].kv_events.endpoint: "tcp://*:5557" is an address to bind, not to connect to: give the engine's host`},
		{"endpoint to bind, IPv6", kv(`"endpoint": "tcp://[::]:5557", "engine": "vllm"`),
			`workers file: workers[0].kv_events.endpoint: "tcp://[::]:5557" is an address to bind, not to connect to: give the engine's host`},
		{"endpoint port 0", kv(`"endpoint": "tcp://h:0", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "tcp://h:0": port "0" is not a number from 1 to 65535`},
		{"endpoint port too big", kv(`"endpoint": "tcp://h:65536", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "tcp://h:65536": port "65536" is not a number from 1 to 65535`},
		{"endpoint with a path", kv(`"endpoint": "tcp://h:5557/x", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "tcp://h:5557/x": port "5557/x" is not a number from 1 to 65535`},
		{"endpoint of another scheme", kv(`"endpoint": "http://h:5557", "engine": "vllm"`),
			`workers file: workers[0].kv_events.endpoint: "http://h:5557" is not tcp://host:port or ipc://path`},
		{"endpoint without scheme", kv(`"endpoint": "h:5557", "engine": "vllm"`),
			`workers file: workers[0].kv_events.endpoint: "h:5557" is not tcp://host:port or ipc://path`},
		{"ipc without path", kv(`"endpoint": "ipc://", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "ipc://" names no path`},
		{"inproc", kv(`"endpoint": "inproc://x", "engine": "vllm"`), `workers file: workers[0].kv_events.endpoint: "inproc://x": an inproc:// endpoint is reachable only inside the engine's process; give tcp://host:port or ipc://path`},
		{"replay endpoint bad", kv(`"endpoint": "tcp://h:1", "replay_endpoint": "tcp://h", "engine": "vllm"`),
			`workers file: workers[0].kv_events.replay_endpoint: "tcp://h" has no port`},
		{"no port for the last rank", oneWorker(`, "data_parallel_size": 2, "kv_events": {"endpoint": "tcp://h:65535", "engine": "vllm"}`),
			`workers file: workers[0].kv_events.endpoint: "tcp://h:65535" leaves no port for rank 1 (rank r uses port + r; data_parallel_size 2)`},
		{"replay on a rank's publisher port", oneWorker(`, "data_parallel_size": 2, "kv_events": {"endpoint": "tcp://h:5557", "replay_endpoint": "tcp://h:5558", "engine": "vllm"}`),
			`workers file: workers[0].kv_events.replay_endpoint: "h:5558" (rank 0) is also workers[0].kv_events.endpoint's`},
		{"two workers on one endpoint", `{"workers": [
			{"worker_id": 1, "component": "backend", "block_size": 16, "kv_events": {"endpoint": "tcp://h:5557", "engine": "vllm"}},
			{"worker_id": 2, "component": "backend", "block_size": 16, "kv_events": {"endpoint": "tcp://h:5557", "engine": "sglang"}}]}`,
			`workers file: workers[1].kv_events.endpoint: "h:5557" (rank 0) is also workers[0].kv_events.endpoint's`},
		{"a rank on another worker's endpoint", `{"workers": [
			{"worker_id": 1, "component": "backend", "block_size": 16, "data_parallel_size": 4, "kv_events": {"endpoint": "tcp://h:5557", "engine": "vllm"}},
			{"worker_id": 2, "component": "backend", "block_size": 16, "kv_events": {"endpoint": "tcp://h:5560", "engine": "vllm"}}]}`,
			`workers file: workers[1].kv_events.endpoint: "h:5560" (rank 0) is also workers[0].kv_events.endpoint's`},
		{"two workers on one ipc path", `{"workers": [
			{"worker_id": 1, "component": "backend", "block_size": 16, "kv_events": {"endpoint": "ipc:///tmp/kv", "engine": "vllm"}},
			{"worker_id": 2, "component": "backend", "block_size": 16, "kv_events": {"endpoint": "ipc:///tmp/kv", "engine": "vllm"}}]}`,
			`workers file: workers[1].kv_events.endpoint: "ipc:///tmp/kv" (rank 0) is also workers[0].kv_events.endpoint's`},
		{"topic not UTF-8", kv(`"endpoint": "tcp://h:1", "engine": "vllm", "topic": "` + "\xff" + `"`),
			`workers file: malformed JSON at byte 140: workers[0].kv_events.topic: not valid UTF-8`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ws, err := DecodeWorkersFile([]byte(tc.file), fileConfig())
			if err == nil {
				t.Fatalf("accepted: %+v", ws)
			}
			if ws != nil {
				t.Errorf("refused, but returned %d workers", len(ws))
			}
			if !errors.Is(err, ErrWorkersFile) {
				t.Errorf("%v does not wrap ErrWorkersFile", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
		})
	}
}

// A file over the size limit is refused before it is read.
func TestDecodeWorkersFileLimits(t *testing.T) {
	big := make([]byte, MaxWorkersFileBytes+1)
	if _, err := DecodeWorkersFile(big, fileConfig()); err == nil || err.Error() != fmt.Sprintf("workers file: %d bytes, over the limit of %d", len(big), MaxWorkersFileBytes) {
		t.Errorf("oversized file: %v", err)
	}
	// Ranks past MaxFileRanks, together.
	var b strings.Builder
	b.WriteString(`{"workers": [`)
	n := MaxFileRanks/MaxDPSize + 1
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"worker_id": %d, "component": "backend", "block_size": 16, "data_parallel_size": %d}`, i+1, MaxDPSize)
	}
	b.WriteString(`]}`)
	want := fmt.Sprintf("workers file: workers[%d].data_parallel_size: the file's workers have more than %d ranks together", n-1, MaxFileRanks)
	if _, err := DecodeWorkersFile([]byte(b.String()), fileConfig()); err == nil || err.Error() != want {
		t.Errorf("too many ranks: %v, want %s", err, want)
	}
}

// fileJSON is a workers file as encoding/json writes it, to round-trip
// what the decoder accepted.
type fileJSON struct {
	Workers []fileWorkerJSON `json:"workers"`
}

type fileWorkerJSON struct {
	WorkerID            uint64        `json:"worker_id"`
	Component           string        `json:"component"`
	BlockSize           int           `json:"block_size"`
	DataParallelSize    int           `json:"data_parallel_size"`
	TotalKVBlocks       int           `json:"total_kv_blocks"`
	MaxNumSeqs          int           `json:"max_num_seqs"`
	MaxNumBatchedTokens int           `json:"max_num_batched_tokens"`
	URL                 string        `json:"url,omitempty"`
	KVEvents            *kvEventsJSON `json:"kv_events,omitempty"`
}

type kvEventsJSON struct {
	Endpoint       string `json:"endpoint"`
	ReplayEndpoint string `json:"replay_endpoint,omitempty"`
	Topic          string `json:"topic"`
	Engine         string `json:"engine"`
}

// encodeWorkersFile writes ws as a workers file.
func encodeWorkersFile(ws []FileWorker) []byte {
	f := fileJSON{Workers: []fileWorkerJSON{}}
	for _, w := range ws {
		j := fileWorkerJSON{WorkerID: uint64(w.ID), Component: w.Component, BlockSize: w.BlockSize, DataParallelSize: w.DPSize,
			TotalKVBlocks: w.TotalKVBlocks, MaxNumSeqs: w.MaxNumSeqs, MaxNumBatchedTokens: w.MaxNumBatchedTokens, URL: w.URL}
		if k := w.KVEvents; k != nil {
			j.KVEvents = &kvEventsJSON{Endpoint: k.Endpoint, ReplayEndpoint: k.ReplayEndpoint, Topic: k.Topic, Engine: k.Engine}
		}
		f.Workers = append(f.Workers, j)
	}
	b, err := json.Marshal(f)
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzDecodeWorkersFile: the decoder never panics; what it accepts is JSON,
// holds the file's rules, and reads back the same once written again; what
// it refuses it refuses whole, with an error wrapping ErrWorkersFile.
func FuzzDecodeWorkersFile(f *testing.F) {
	f.Add([]byte(exampleFile))
	f.Add([]byte(`{"workers": []}`))
	f.Add([]byte(oneWorker(`, "data_parallel_size": 3, "kv_events": {"endpoint": "tcp://[::1]:5557", "replay_endpoint": "ipc:///tmp/r", "topic": "", "engine": "sglang"}`)))
	f.Add([]byte(oneWorker(`, "url": "https://w.example:8443/v1", "total_kv_blocks": null`)))
	f.Add([]byte(`{"workers": [{"worker_id": 1, "component": "prefill", "block_size": 1}, {"worker_id": 2, "component": "backend", "block_size": 1048576}]}`))
	f.Add([]byte(`{"workers": [{"worker_id": 5, "component": "backend", "block_size": 16}, {"worker_id": 5, "component": "backend", "block_size": 16}]}`))
	cfg := fileConfig()
	f.Fuzz(func(t *testing.T, data []byte) {
		ws, err := DecodeWorkersFile(data, cfg)
		if err != nil {
			if ws != nil || !errors.Is(err, ErrWorkersFile) || !strings.HasPrefix(err.Error(), "workers file: ") {
				t.Fatalf("refused with %d workers and error %v", len(ws), err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted a file that is not JSON: %q", data)
		}
		seen := map[indexer.WorkerID]bool{}
		for i, w := range ws {
			switch {
			case w.ID == 0 || seen[w.ID]:
				t.Fatalf("workers[%d]: id %d zero or repeated", i, w.ID)
			case w.Component != cfg.Component && w.Component != cfg.PrefillComponent:
				t.Fatalf("workers[%d]: component %q", i, w.Component)
			case w.BlockSize < 1 || w.BlockSize > MaxBlockSize || w.DPSize < 1 || w.DPSize > MaxDPSize:
				t.Fatalf("workers[%d]: block size %d, dp size %d", i, w.BlockSize, w.DPSize)
			case w.KVEvents != nil && w.KVEvents.Engine != EngineVLLM && w.KVEvents.Engine != EngineSGLang:
				t.Fatalf("workers[%d]: engine %q", i, w.KVEvents.Engine)
			}
			seen[w.ID] = true
		}
		again, err := DecodeWorkersFile(encodeWorkersFile(ws), cfg)
		if err != nil {
			t.Fatalf("written again, refused: %v", err)
		}
		if !slices.EqualFunc(ws, again, sameFileWorker) {
			t.Fatalf("written again, reads\n%+v\nnot\n%+v", again, ws)
		}
	})
}
