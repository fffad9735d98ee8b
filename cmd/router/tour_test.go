package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kvrouter/router/internal/testutil"
	"github.com/kvrouter/router/workers"
)

// TestQuickTour runs the quick tour as `router serve --embedded` prints it
// (and as the README tells it): two simulated workers, a prompt served once
// through the router, then routed again. The second route must go to the
// worker that holds the prompt, with overlap_blocks > 0; mark_free ends it.
// A worker with another block size then shows in /health as degraded.
func TestQuickTour(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testutil.Buffer
	served := make(chan int, 1)
	go func() {
		served <- run(ctx, []string{"router", "serve", "--embedded",
			"--nats-url", "nats://127.0.0.1:0", "--etcd-endpoints", "http://127.0.0.1:0",
			"--system-host", "127.0.0.1", "--system-port", "0", "--log-format", "json"}, &stdout, &stderr)
	}()
	testutil.Eventually(t, 60*time.Second, func() bool {
		select {
		case code := <-served:
			t.Fatalf("router exited %d early; stderr:\n%s", code, stderr.String())
		default:
		}
		return strings.Contains(stdout.String(), "Stop with Ctrl-C.")
	}, "router did not print the tour; stdout:\n%s", &stdout)

	// The commands, as printed.
	var simArgs, generateArgs, routeArgs, freeArgs []string
	var healthURL string
	promptLen := 0
	for _, line := range strings.Split(stdout.String(), "\n") {
		line = strings.TrimSpace(line)
		if m := regexp.MustCompile(`^P=\$\(seq (\d+) \| paste -sd, -\)$`).FindStringSubmatch(line); m != nil {
			promptLen, _ = strconv.Atoi(m[1])
			continue
		}
		if u, ok := strings.CutPrefix(line, "curl -s "); ok {
			healthURL = u
			continue
		}
		args, ok := strings.CutPrefix(line, "bin/router ")
		if !ok {
			continue
		}
		fields := append([]string{"router"}, strings.Fields(args)...)
		switch {
		case fields[1] == "sim" && fields[2] == "generate":
			generateArgs = fields
		case fields[1] == "sim":
			simArgs = fields
		case fields[len(fields)-1] == "route":
			routeArgs = fields
		case fields[len(fields)-1] == "mark_free":
			freeArgs = fields
		}
	}
	if simArgs == nil || generateArgs == nil || routeArgs == nil || freeArgs == nil || promptLen == 0 || healthURL == "" {
		t.Fatalf("the printed tour lacks a step:\n%s", stdout.String())
	}
	prompt := make([]string, promptLen)
	for i := range prompt {
		prompt[i] = strconv.Itoa(i + 1)
	}
	withPrompt := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = strings.ReplaceAll(a, "$P", strings.Join(prompt, ","))
		}
		return out
	}
	// runCmd runs one command of the tour to its end.
	runCmd := func(args []string) string {
		t.Helper()
		var out, errw bytes.Buffer
		if code := run(ctx, withPrompt(args), &out, &errw); code != 0 {
			t.Fatalf("%s exited %d:\n%s%s", strings.Join(args, " "), code, out.String(), errw.String())
		}
		return out.String()
	}

	// The workers, until the test ends.
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan int, 2)
	sims := 0
	stopSims := func() {
		stopSim()
		for ; sims > 0; sims-- {
			<-simDone
		}
	}
	defer stopSims()
	var simOut, simErr testutil.Buffer
	sims++
	go func() { simDone <- run(simCtx, simArgs, &simOut, &simErr) }()
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(simOut.String(), "2 simulated workers ready (block size 128)")
	}, "workers not ready; stdout:\n%s\nstderr:\n%s", &simOut, &simErr)

	// The router learns of the workers through etcd's watch, a moment after
	// they say they are ready; a person typing the next command gives it
	// that time.
	loadsArgs := dropFlag(append(append([]string{}, routeArgs[:len(routeArgs)-1]...), "potential_loads"), "--request-id")
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Count(runCmd(loadsArgs), `"worker_id"`) == 2
	}, "the router never listed the 2 workers")

	// Served once: routed to some worker, which computes and caches it.
	gen := runCmd(generateArgs)
	first := regexp.MustCompile(`(?m)^route\s+(\{.*\})$`).FindStringSubmatch(gen)
	if first == nil || !strings.Contains(gen, "mark_free    {\"success\":true}") {
		t.Fatalf("sim generate printed:\n%s", gen)
	}
	var served1 routeReply
	if err := json.Unmarshal([]byte(first[1]), &served1); err != nil || served1.OverlapBlocks != 0 || served1.NumBlocks != 4 {
		t.Fatalf("first route %s (%v): want 0 of 4 blocks cached", first[1], err)
	}

	// The worker's KV events reach the router's index asynchronously; a
	// person typing the next command gives them that time.
	overlapArgs := append(append([]string{}, routeArgs[:len(routeArgs)-1]...), "overlap_scores")
	overlapArgs = dropFlag(overlapArgs, "--request-id")
	testutil.Eventually(t, 30*time.Second, func() bool {
		return strings.Contains(runCmd(overlapArgs), `"overlap_blocks":4`)
	}, "the router never saw the worker store the prompt")

	// Routed again: to the worker that holds it.
	var again routeReply
	out := runCmd(routeArgs)
	if err := json.Unmarshal([]byte(out), &again); err != nil {
		t.Fatalf("route printed %q: %v", out, err)
	}
	if again.WorkerID != served1.WorkerID || again.OverlapBlocks <= 0 || again.WorkerType != "aggregated" {
		t.Fatalf("second route %s: want worker %d, which holds the prompt, with overlap_blocks > 0", out, served1.WorkerID)
	}
	if out := runCmd(freeArgs); strings.TrimSpace(out) != `{"success":true}` {
		t.Fatalf("mark_free printed %q", out)
	}

	// A worker whose block size differs: an ERROR in the log, and /health
	// stays ready (200) with the block_size check listed under degraded.
	mismatched := append(append([]string{}, simArgs...), "--workers", "1", "--block-size", "64")
	var misOut, misErr testutil.Buffer
	sims++
	go func() { simDone <- run(simCtx, mismatched[:len(mismatched):len(mismatched)], &misOut, &misErr) }()
	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	var health struct {
		Status    string            `json:"status"`
		Endpoints map[string]string `json:"endpoints"`
		Degraded  []string          `json:"degraded"`
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, err := client.Get(healthURL)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		health.Degraded = nil
		return resp.StatusCode == 200 && json.Unmarshal(body, &health) == nil && len(health.Degraded) > 0
	}, "/health never listed the mismatched worker")
	if health.Status != "ready" || health.Endpoints["block_size"] != "ready" || !strings.HasPrefix(health.Degraded[0], "block_size: ") {
		t.Fatalf("/health = %+v: want ready, with block_size under degraded", health)
	}
	if !strings.Contains(stderr.String(), `"level":"ERROR","msg":"worker block size differs from the router's`) {
		t.Fatalf("no ERROR log of the mismatch; stderr:\n%s", stderr.String())
	}

	stopSims()
	cancel()
	select {
	case code := <-served:
		if code != 0 {
			t.Fatalf("router exit %d after shutdown; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("router did not stop within 30s of its context ending")
	}
}

// routeReply is the part of a route reply the tour shows.
type routeReply struct {
	WorkerID      uint64 `json:"worker_id"`
	OverlapBlocks int    `json:"overlap_blocks"`
	NumBlocks     int    `json:"num_blocks"`
	WorkerType    string `json:"worker_type"`
}

// dropFlag removes a flag and its value from args.
func dropFlag(args []string, name string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == name {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// TestNextStepsCarryTheFlags: with make run's defaults the printed tour
// needs no flag; with other addresses and names, each command gets the
// flags it needs to reach this router.
func TestNextStepsCarryTheFlags(t *testing.T) {
	def := serveConfig{
		NATSURL: "nats://127.0.0.1:4222", EtcdEndpoints: []string{"http://127.0.0.1:2379"},
		Namespace: "dynamo", Component: "backend", RouterComponent: "router", HealthPath: "/health",
		Workers: workers.Config{BlockSize: workers.DefaultBlockSize},
	}
	other := def
	other.NATSURL, other.EtcdEndpoints = "nats://127.0.0.1:5000", []string{"http://127.0.0.1:5001"}
	other.Namespace, other.Component, other.RouterComponent = "ns1", "w", "r"
	other.Workers.BlockSize = 64
	tests := []struct {
		name   string
		cfg    serveConfig
		status string
		want   []string
	}{
		{"defaults", def, "[::]:8081", []string{
			"\n  bin/router sim --workers 2\n",
			"\n  P=$(seq 512 | paste -sd, -)\n",
			"\n  bin/router sim generate --token-ids $P\n",
			"\n  bin/router request --token-ids $P --request-id again route\n",
			"\n  bin/router request --request-id again mark_free\n",
			"\n  curl -s http://localhost:8081/health\n",
		}},
		{"elsewhere", other, "", []string{
			"\n  bin/router sim --workers 2 --nats-url nats://127.0.0.1:5000 --namespace ns1 --etcd-endpoints http://127.0.0.1:5001 --component w --block-size 64\n",
			"\n  P=$(seq 256 | paste -sd, -)\n",
			"\n  bin/router sim generate --nats-url nats://127.0.0.1:5000 --namespace ns1 --component w --router-component r --token-ids $P\n",
			"\n  bin/router request --nats-url nats://127.0.0.1:5000 --namespace ns1 --router-component r --token-ids $P --request-id again route\n",
			"metrics: (status server off: set DYN_SYSTEM_PORT)",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			printNextSteps(&b, tt.cfg, tt.status)
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("lacks %q:\n%s", w, b.String())
				}
			}
			if strings.Contains(b.String(), "etcdctl") {
				t.Errorf("still needs etcdctl:\n%s", b.String())
			}
		})
	}
}
