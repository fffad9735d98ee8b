package embedded_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvrouter/router/internal/embedded"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A port another process holds fails at once with the listen error: not
// after the readiness timeout (10s), and not as a timeout.
func TestStartFailsFastOnPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	url := "http://127.0.0.1:" + strconv.Itoa(port)

	tests := []struct {
		name  string
		start func() error
	}{
		{"nats", func() error {
			n, err := embedded.StartNATS(embedded.NATSConfig{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: t.TempDir()})
			if err == nil {
				n.Close()
			}
			return err
		}},
		{"etcd client", func() error {
			e, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: url, PeerURL: "http://127.0.0.1:0", Dir: t.TempDir()})
			if err == nil {
				e.Close()
			}
			return err
		}},
		{"etcd peer", func() error {
			e, err := embedded.StartEtcd(embedded.EtcdConfig{ClientURL: "http://127.0.0.1:0", PeerURL: url, Dir: t.TempDir()})
			if err == nil {
				e.Close()
			}
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			began := time.Now()
			err := tc.start()
			took := time.Since(began)
			if err == nil {
				t.Fatal("started on a port in use")
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				t.Errorf("error %q does not match syscall.EADDRINUSE", err)
			}
			// The old failure was a 10s readiness timeout; a listen error
			// takes milliseconds. 2s leaves room for a loaded machine.
			if took > 2*time.Second {
				t.Errorf("failed after %v, want under 2s", took)
			}
			t.Logf("failed in %v: %v", took, err)
		})
	}
}

// The free-port case still starts, and the server answers on its URL.
func TestStartNATSOnFreePort(t *testing.T) {
	n, err := embedded.StartNATS(embedded.NATSConfig{Host: "127.0.0.1", Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr := n.Server().Addr()
	if addr == nil {
		t.Fatalf("server at %s has no listener", n.URL())
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatalf("dial %s: %v", n.URL(), err)
	}
	c.Close()
}

// A failure the server reports only to its logger while starting (here
// JetStream's store is a file, not a directory) returns at once with the
// server's message, not as a readiness timeout.
func TestStartNATSReportsStartFailure(t *testing.T) {
	store := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	n, err := embedded.StartNATS(embedded.NATSConfig{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: store})
	took := time.Since(began)
	if err == nil {
		n.Close()
		t.Fatal("started with a file for its store")
	}
	if strings.Contains(err.Error(), "not ready within") || took > 2*time.Second {
		t.Errorf("failed after %v with %q, want the server's own error under 2s", took, err)
	}
	t.Logf("failed in %v: %v", took, err)
}
