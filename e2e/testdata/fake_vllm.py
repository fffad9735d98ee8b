#!/usr/bin/python3
"""A fake vLLM (or SGLang) KV-event publisher on libzmq, for the router's end-to-end tests.

It plays what vLLM does with --kv-events-config (see the router's
docs/compat.md, "Engine-native KV events"): per data-parallel rank r, a
publisher bound on 127.0.0.1:(pub_port + r) sending 3-frame messages
[topic, 8-byte big-endian sequence, MessagePack batch], and a ROUTER replay
socket on 127.0.0.1:(replay_port + r) answering [identity, "", start] with
every kept batch from start on, then the end marker.

The publisher is an XPUB socket: to subscribers it is a PUB, and it lets the
script see subscriptions, so that a test can wait for the router before
publishing (ZMQ drops what a PUB sends before the subscription arrives).

Commands come on stdin, one JSON object per line; each is answered on stdout
with one JSON line ({"ok": true, ...} or {"ok": false, "error": ...}):

  {"op": "store", "rank": 0, "hashes": [..], "parent": h|null, "tokens": [..],
   "block_size": 16, "medium": "GPU"|"CPU"|null, "lora_name": null, "live": true}
  {"op": "remove", "rank": 0, "hashes": [..], "medium": "GPU", "live": true}
  {"op": "clear", "rank": 0}
  {"op": "forget", "rank": 0}      drop the kept batches (a rolled-over buffer)
  {"op": "restart", "rank": 0}     sequence back to 0, kept batches dropped
  {"op": "wait_subscribed", "rank": 0, "timeout": 10}

"live": false keeps the batch for replay without sending it, as a batch the
subscriber lost. Replies to store/remove/clear carry the batch's "seq".

With --format sglang it plays SGLang instead: events as positional arrays
[tag, block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]
(hashes as signed 64-bit integers, negative when their top bit is set), and
replay replies without the topic frame.
"""

import argparse
import json
import struct
import sys
import threading
import time

import msgpack
import zmq

END = struct.pack(">Q", 0xFFFFFFFFFFFFFFFF)


class Rank:
    def __init__(self, ctx, rank, pub_port, replay_port, topic, sglang):
        self.rank = rank
        self.sglang = sglang
        self.topic = topic.encode()
        self.pub = ctx.socket(zmq.XPUB)
        self.pub.bind("tcp://127.0.0.1:%d" % (pub_port + rank))
        self.router = ctx.socket(zmq.ROUTER)
        self.router.bind("tcp://127.0.0.1:%d" % (replay_port + rank))
        self.lock = threading.Lock()
        self.seq = 0
        self.kept = []  # (seq, payload)
        self.subscribers = 0
        self.stop = False
        self.thread = threading.Thread(target=self.serve_replay, daemon=True)
        self.thread.start()

    def serve_replay(self):
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        while not self.stop:
            if not poller.poll(100):
                continue
            frames = self.router.recv_multipart()
            if len(frames) != 3 or len(frames[2]) != 8:
                continue
            ident = frames[0]
            start = struct.unpack(">Q", frames[2])[0]
            with self.lock:
                out = [(s, p) for (s, p) in self.kept if s >= start]
            for s, p in out:
                if self.sglang:
                    self.router.send_multipart([ident, b"", struct.pack(">Q", s), p])
                else:
                    self.router.send_multipart([ident, b"", self.topic, struct.pack(">Q", s), p])
            if self.sglang:
                self.router.send_multipart([ident, b"", END, b""])
            else:
                self.router.send_multipart([ident, b"", b"", END, b""])

    def drain_subscriptions(self):
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if msg[:1] == b"\x01":
                self.subscribers += 1
            elif msg[:1] == b"\x00":
                self.subscribers -= 1

    def publish(self, events, live):
        payload = msgpack.packb([time.time(), events, self.rank], use_bin_type=True)
        with self.lock:
            seq = self.seq
            self.seq += 1
            self.kept.append((seq, payload))
        if live:
            self.pub.send_multipart([self.topic, struct.pack(">Q", seq), payload])
        return seq


def signed(h):
    # SGLang publishes the first 8 bytes of its digest as a signed int64.
    return h - (1 << 64) if h >= (1 << 63) else h


def stored(cmd, sglang):
    if sglang:
        parent = cmd.get("parent")
        return ["BlockStored", [signed(h) for h in cmd["hashes"]], None if parent is None else signed(parent),
                cmd.get("tokens") or [], cmd.get("block_size", 16), None, cmd.get("medium", "GPU")]
    # vLLM's current encoding: a map per event, keys in declaration order.
    ev = {
        "type": "BlockStored",
        "block_hashes": cmd["hashes"],
        "parent_block_hash": cmd.get("parent"),
        "token_ids": cmd.get("tokens") or [],
        "block_size": cmd.get("block_size", 16),
        "lora_id": None,
        "medium": cmd.get("medium", "GPU"),
        "lora_name": cmd.get("lora_name"),
        "extra_keys": [None] * len(cmd["hashes"]),
        "group_idx": 0,
        "kv_cache_spec_kind": "full_attention",
    }
    return ev


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pub-port", type=int, required=True)
    ap.add_argument("--replay-port", type=int, required=True)
    ap.add_argument("--dp", type=int, default=1)
    ap.add_argument("--topic", default="")
    ap.add_argument("--format", choices=["vllm", "sglang"], default="vllm")
    args = ap.parse_args()
    sglang = args.format == "sglang"
    ctx = zmq.Context()
    try:
        ranks = [Rank(ctx, r, args.pub_port, args.replay_port, args.topic, sglang) for r in range(args.dp)]
    except zmq.ZMQError as e:
        print(json.dumps({"ok": False, "error": "bind: %s" % e}), flush=True)
        return 1
    print(json.dumps({"ok": True, "ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        r = ranks[cmd.get("rank", 0)]
        r.drain_subscriptions()
        op = cmd["op"]
        live = cmd.get("live", True)
        reply = {"ok": True}
        if op == "store":
            reply["seq"] = r.publish([stored(cmd, sglang)], live)
        elif op == "remove":
            if sglang:
                ev = ["BlockRemoved", [signed(h) for h in cmd["hashes"]], cmd.get("medium", "GPU")]
            else:
                ev = {"type": "BlockRemoved", "block_hashes": cmd["hashes"], "medium": cmd.get("medium", "GPU"), "group_idx": 0}
            reply["seq"] = r.publish([ev], live)
        elif op == "clear":
            reply["seq"] = r.publish([["AllBlocksCleared"] if sglang else {"type": "AllBlocksCleared"}], live)
        elif op == "forget":
            with r.lock:
                r.kept = []
        elif op == "restart":
            with r.lock:
                r.seq, r.kept = 0, []
        elif op == "wait_subscribed":
            deadline = time.time() + cmd.get("timeout", 10)
            while r.subscribers <= 0 and time.time() < deadline:
                if r.pub.poll(50):
                    r.drain_subscriptions()
            reply = {"ok": r.subscribers > 0, "subscribers": r.subscribers}
        else:
            reply = {"ok": False, "error": "unknown op %r" % op}
        print(json.dumps(reply), flush=True)
    for r in ranks:
        r.stop = True
        r.thread.join()
        r.pub.close(0)
        r.router.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
