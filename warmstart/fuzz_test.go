package warmstart

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvrouter/router/events"
	"github.com/kvrouter/router/events/codec"
	"github.com/kvrouter/router/indexer"
	"github.com/kvrouter/router/metrics"
)

// script turns fuzz input into reply messages: one per line, fields
// separated by '|': chunk, chunks, bytes, events, error, body. A field "-"
// leaves its header out.
func script(in []byte) []*nats.Msg {
	var msgs []*nats.Msg
	for _, line := range bytes.Split(in, []byte{'\n'}) {
		f := bytes.SplitN(line, []byte{'|'}, 6)
		for len(f) < 6 {
			f = append(f, []byte("-"))
		}
		m := nats.NewMsg("")
		for i, name := range []string{HeaderChunk, HeaderChunks, HeaderBytes, HeaderEvents, HeaderError} {
			if string(f[i]) != "-" {
				m.Header.Set(name, string(f[i]))
			}
		}
		m.Data = f[5]
		msgs = append(msgs, m)
	}
	return msgs
}

// FuzzReply feeds a joiner's reply decoding (the collector, then the
// snapshot decoder behind Writer.LoadSnapshot) arbitrary replies: it never
// panics, a snapshot it takes whole has the announced length, and a reply
// it refuses, at either step, leaves nothing in the index.
func FuzzReply(f *testing.F) {
	ev := codec.AppendJSON(nil, indexer.Event{Worker: indexer.Worker{ID: 3}, Kind: indexer.KindStored,
		Blocks: []indexer.Block{{Hash: 5, Tokens: 5}}}, codec.Meta{EventID: 2})
	snap := "[" + string(ev) + "]"
	half := len(snap) / 2
	f.Add([]byte("0|1|2|0|-|[]"))
	f.Add([]byte("0|2|" + itoa(len(snap)) + "|1|-|" + snap[:half] + "\n1|2|" + itoa(len(snap)) + "|1|-|" + snap[half:]))
	f.Add([]byte("0|1|" + itoa(len(snap)) + "|1|-|" + snap))
	f.Add([]byte("0|3|3|0|-|a\n2|3|3|0|-|c"))
	f.Add([]byte("-|-|-|-|peer failed|"))
	f.Add([]byte("0|99999999999999999999|1|1|-|x"))
	f.Add([]byte("0|1|5|1|-|[{}]x"))

	m, err := metrics.New(prometheus.NewRegistry(), metrics.DefaultConfig())
	if err != nil {
		f.Fatal(err)
	}
	cfg := events.DefaultConfig()
	cfg.EventThreads = 1
	f.Fuzz(func(t *testing.T, in []byte) {
		var (
			c    collector
			done bool
			err  error
			fed  int
		)
		for _, msg := range script(in) {
			if done, err = c.add(msg.Header, msg.Data); err != nil || done {
				fed += len(msg.Data)
				break
			}
			fed += len(msg.Data)
		}
		if !done {
			return // refused or incomplete: Fetch returns no snapshot
		}
		if len(c.buf) != c.total || c.next != c.chunks || fed != c.total {
			t.Fatalf("whole snapshot of %d bytes in %d of %d chunks, %d bytes fed; announced %d", len(c.buf), c.next, c.chunks, fed, c.total)
		}

		idx := indexer.NewIndex(indexer.Config{})
		w, err := events.NewWriter(cfg, idx, m, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Hold(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		wctx, stop := context.WithCancel(ctx)
		wdone := make(chan error, 1)
		go func() { wdone <- w.Run(wctx) }()
		defer func() {
			stop()
			if err := <-wdone; err != nil {
				t.Error(err)
			}
		}()
		n, lerr := w.LoadSnapshot(ctx, c.buf)
		if _, err := w.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if lerr != nil && (n != 0 || idx.Stats().Entries != 0) {
			t.Fatalf("snapshot refused (%v) but %d events submitted, %d entries indexed", lerr, n, idx.Stats().Entries)
		}
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
