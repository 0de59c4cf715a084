package coordinator

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are one Server's Prometheus metrics, in a registry of its own.
type metrics struct {
	reg          *prometheus.Registry
	submitted    prometheus.Counter
	finished     *prometheus.CounterVec   // outcome
	claimWait    prometheus.Histogram     // how long a successful claim request waited
	pickup       prometheus.Histogram     // submit to first claim
	claimEmpty   prometheus.Counter       // claim requests that ended without a job
	reaped       *prometheus.CounterVec   // new_state
	logBytes     prometheus.Counter       // bytes received by log appends
	httpDuration *prometheus.HistogramVec // route, code
}

func newMetrics() *metrics {
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "airlock_jobs_submitted_total", Help: "Jobs submitted.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_attempts_finished_total", Help: "Attempts finished by their executor, by outcome.",
		}, []string{"outcome"}),
		claimWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "airlock_claim_wait_seconds", Help: "How long a claim request that got a job waited for it.",
			Buckets: latency,
		}),
		pickup: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "airlock_job_pickup_seconds", Help: "Time from a job's submission to its first claim.",
			Buckets: latency,
		}),
		claimEmpty: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "airlock_claims_empty_total", Help: "Claim requests that ended without a job.",
		}),
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "airlock_attempts_reaped_total", Help: "Attempts ended by the reaper, by the job's new state.",
		}, []string{"new_state"}),
		logBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "airlock_log_bytes_received_total", Help: "Log bytes received from executors (resends included).",
		}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "airlock_http_request_duration_seconds", Help: "HTTP request durations, by route and status.",
			Buckets: latency,
		}, []string{"route", "code"}),
	}
	m.reg.MustRegister(m.submitted, m.finished, m.claimWait, m.pickup, m.claimEmpty, m.reaped, m.logBytes,
		m.httpDuration, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// instrument records the duration and status of every request to route.
func (s *Server) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.status
			if code == 0 {
				code = http.StatusOK
			}
			s.metrics.httpDuration.WithLabelValues(route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
		}()
		h.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status written through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	http.NewResponseController(w.ResponseWriter).Flush()
}
