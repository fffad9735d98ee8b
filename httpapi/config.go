package httpapi

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/kvrouter/router/scheduler"
	"github.com/kvrouter/router/service"
)

// Defaults of Config: where the server listens, its timeouts and limits
// (docs/api.md §7). Only the host and the port are flags; the rest are
// fixed here, each with the reason for its value.
const (
	// DefaultHost listens on every interface, as the status server does.
	DefaultHost = "0.0.0.0"
	// DefaultReadHeaderTimeout bounds the reading of a request's headers.
	// A client that sends them slower is disconnected, so that connections
	// that never finish a request cannot pile up.
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout bounds the reading of a whole request, headers and
	// body: the largest body (service.MaxRequestBytes, 8 MiB) then needs
	// about 280 kB/s, and a frontend on the same network sends it in
	// milliseconds.
	DefaultReadTimeout = 30 * time.Second
	// DefaultReplyTimeout is the time left to write a reply once it is
	// decided; see Config.WriteTimeout.
	DefaultReplyTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a keep-alive connection may wait for
	// its next request. It is longer than the idle limit of Go's client
	// connection pool (http.DefaultTransport, 90 s), so that such a client,
	// not the server, closes an idle connection: a server that closes first
	// may close one the client is just reusing, and that request fails.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxHeaderBytes bounds a request's headers (net/http's default
	// is 1 MiB). A frontend sends a handful of short headers; 64 KiB leaves
	// room for proxies' tracing headers and bounds the memory of a
	// connection that sends junk.
	DefaultMaxHeaderBytes = 64 << 10
)

// Config says where the HTTP API listens and bounds its requests. It is
// plain data; flags and environment variables are bound in cmd/.
type Config struct {
	// Host and Port to listen on (--http-host, DYN_ROUTER_HTTP_HOST;
	// --http-port, DYN_ROUTER_HTTP_PORT); port 0 picks a free port.
	Host string
	Port int
	// ReadHeaderTimeout bounds the reading of a request's headers,
	// ReadTimeout of the whole request, body included.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	// QueueTimeout is the longest a route request may wait in the
	// scheduler's queue (--router-queue-timeout; stack sets it from the
	// scheduler's configuration), and ReplyTimeout the time left to write
	// the reply after that: see WriteTimeout.
	QueueTimeout time.Duration
	ReplyTimeout time.Duration
	// IdleTimeout bounds the wait of a keep-alive connection for its next
	// request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; more is answered 431 by
	// net/http.
	MaxHeaderBytes int
	// DrainTimeout bounds the shutdown: requests in flight are answered
	// within it, and never past the router's shutdown deadline
	// (--router-drain-timeout, the same bound as the NATS endpoints').
	DrainTimeout time.Duration
}

// DefaultConfig returns the defaults above, on port 0, with the
// scheduler's and the service's default queue and drain timeouts.
func DefaultConfig() Config {
	return Config{
		Host:              DefaultHost,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		QueueTimeout:      scheduler.DefaultQueueTimeout,
		ReplyTimeout:      DefaultReplyTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		DrainTimeout:      service.DefaultDrainTimeout,
	}
}

// WriteTimeout is the server's write timeout: net/http counts it from the
// end of a request's headers to the end of its reply, so it must cover
// reading the body (at most ReadTimeout), a route's wait in the queue (at
// most QueueTimeout) and writing the reply (ReplyTimeout). A request that
// waits longer than the queue allows is answered timeout by the scheduler
// before this deadline, never cut off by it.
func (c Config) WriteTimeout() time.Duration { return c.ReadTimeout + c.QueueTimeout + c.ReplyTimeout }

// Validate reports every setting out of range, one error per setting
// joined with errors.Join, each naming its flag first, or the Config field
// for the settings that are no flag, and the allowed range.
func (c Config) Validate() error {
	var errs []error
	if !validHost(c.Host) {
		errs = append(errs, fmt.Errorf("--http-host: %q is not a host name or an IP address (0.0.0.0 listens on every interface)", c.Host))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("--http-port: %d is out of range (allowed 0..65535)", c.Port))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"ReadHeaderTimeout", c.ReadHeaderTimeout}, {"ReadTimeout", c.ReadTimeout},
		{"ReplyTimeout", c.ReplyTimeout}, {"IdleTimeout", c.IdleTimeout},
	} {
		if d.v <= 0 || d.v > time.Hour {
			errs = append(errs, fmt.Errorf("http api %s: %v is out of range (allowed > 0 and ≤ 1h)", d.name, d.v))
		}
	}
	if c.ReadHeaderTimeout > c.ReadTimeout {
		errs = append(errs, fmt.Errorf("http api ReadHeaderTimeout: %v is longer than ReadTimeout %v, which includes it", c.ReadHeaderTimeout, c.ReadTimeout))
	}
	// The scheduler bounds the queue timeout (--router-queue-timeout); any
	// it accepts makes a write deadline.
	if c.QueueTimeout < 0 {
		errs = append(errs, fmt.Errorf("http api QueueTimeout: %v is negative", c.QueueTimeout))
	}
	if c.MaxHeaderBytes < 1<<10 || c.MaxHeaderBytes > 1<<20 {
		errs = append(errs, fmt.Errorf("http api MaxHeaderBytes: %d is out of range (allowed 1024..1048576)", c.MaxHeaderBytes))
	}
	if c.DrainTimeout <= 0 || c.DrainTimeout > time.Hour {
		errs = append(errs, fmt.Errorf("--router-drain-timeout: %v is out of range (allowed > 0 and ≤ 1h)", c.DrainTimeout))
	}
	return errors.Join(errs...)
}

// validHost reports whether h is an IP address or a host name (letters,
// digits and '-' in dot-separated labels of at most 63 characters).
func validHost(h string) bool {
	if net.ParseIP(h) != nil {
		return true
	}
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
