package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the Prometheus text exposition of g, gathered afresh at
// every request (which is also when GaugeFuncs such as the uptime gauge are
// computed). A collector that fails is logged to log and left out; the rest
// is still served, so one broken family never blanks a dashboard. A nil log
// discards the messages.
func Handler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      errorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// errorLog adapts slog to promhttp.Logger.
type errorLog struct{ log *slog.Logger }

var _ promhttp.Logger = errorLog{}

// Println logs one promhttp error as a warning.
func (l errorLog) Println(v ...any) {
	l.log.Warn("metrics exposition error", "error", fmt.Sprint(v...))
}
