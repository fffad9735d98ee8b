// Package httpserve runs the router's HTTP servers (the HTTP API, httpapi,
// and the status server, status) the same way: a listening socket bound
// before the server runs, so that a port in use fails at once and the
// address is known early, and a server that serves on it until its
// context ends, then drains within its own bound and never past the
// router's shutdown deadline (internal/shutdown).
//
// What differs between the servers is a parameter: the name that prefixes
// their errors, the http.Server (handler and timeouts), the drain bound,
// and what a drain cut short at its deadline does.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kvrouter/router/internal/shutdown"
)

// Listener is the listening socket of one server. Its zero value is not
// usable: NewListener names it and says where it listens. It is safe for
// concurrent use.
type Listener struct {
	name string
	host string
	port int

	// mu guards ln; a leaf lock (docs/locks.md).
	mu sync.Mutex
	ln net.Listener
}

// NewListener returns the socket of server name (the prefix of its
// errors, such as "status server") on host and port; port 0 picks a free
// port. It binds nothing until Listen.
func NewListener(name, host string, port int) *Listener {
	return &Listener{name: name, host: host, port: port}
}

// Listen binds the socket and returns its address.
func (l *Listener) Listen() (net.Addr, error) {
	ln, err := l.listen()
	if err != nil {
		return nil, err
	}
	return ln.Addr(), nil
}

// listen binds the socket and returns it.
func (l *Listener) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(l.host, strconv.Itoa(l.port)))
	if err != nil {
		return nil, fmt.Errorf("%s: listen on %s:%d: %w", l.name, l.host, l.port, err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	return ln, nil
}

// Addr returns the address listened on, or "" before Listen.
func (l *Listener) Addr() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return ""
	}
	return l.ln.Addr().String()
}

// Close releases the socket Listen bound, for a server that will not
// Serve. Serve closes it itself.
func (l *Listener) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln == nil {
		return nil
	}
	return l.ln.Close()
}

// listener returns the bound socket, binding it first if Listen has not
// been called.
func (l *Listener) listener() (net.Listener, error) {
	l.mu.Lock()
	ln := l.ln
	l.mu.Unlock()
	if ln != nil {
		return ln, nil
	}
	return l.listen()
}

// Serve serves srv on the socket (calling Listen if that has not been
// done) until ctx ends, then shuts srv down: it stops accepting
// connections, closes idle ones and waits for the requests in flight, for
// at most drain and never past the router's shutdown deadline
// (shutdown.DrainContext). A shutdown cut short is the server's choice:
// with cutShort nil, Serve returns it as an error ("<name>: shutdown:
// ..."); otherwise it calls cutShort with the drain's deadline and the
// shutdown's error, closes the connections left and returns nil. Serve
// returns nil after a shutdown, and an error ("<name>: ...") if serving
// fails.
func (l *Listener) Serve(ctx context.Context, srv *http.Server, drain time.Duration, cutShort func(deadline time.Time, err error)) error {
	ln, err := l.listener()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", l.name, err)
	case <-ctx.Done():
	}
	sctx, cancel := shutdown.DrainContext(ctx, drain)
	defer cancel()
	err = srv.Shutdown(sctx)
	if err != nil && cutShort != nil {
		d, _ := sctx.Deadline()
		cutShort(d, err)
		_ = srv.Close()
		err = nil
	}
	if serr := <-errc; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr // Serve failed as the shutdown came
	}
	if err != nil {
		return fmt.Errorf("%s: shutdown: %w", l.name, err)
	}
	return nil
}
