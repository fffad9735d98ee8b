package testutil

import (
	"context"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	VerifyTestMain(m)
}

func TestServersServe(t *testing.T) {
	n := NATS(t)
	nc := NATSConn(t, n.URL())
	sub, err := nc.SubscribeSync("ping")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("ping", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if msg, err := sub.NextMsg(5 * time.Second); err != nil || string(msg.Data) != "x" {
		t.Fatalf("NextMsg = %v, %v", msg, err)
	}
	js, err := nc.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(); err != nil {
		t.Fatalf("jetstream is off: %v", err)
	}

	e := Etcd(t)
	c := EtcdClient(t, e.Endpoint())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("Get = %v, %v", resp, err)
	}
}
