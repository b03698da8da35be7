package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type server struct {
	*http.Server
	ln net.Listener
}

// listen binds CDCD_HTTP_ADDR before the stream starts, so a port in use
// stops start-up at once.
func (d *daemon) listen() (*server, error) {
	ln, err := net.Listen("tcp", d.cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("CDCD_HTTP_ADDR: listen on %s: %w", d.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{Registry: d.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", d.readyz)
	if d.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Addr:              ln.Addr().String(),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	return &server{Server: srv, ln: ln}, nil
}

func (d *daemon) serve(ctx context.Context, srv *server) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(srv.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	return nil
}

// readyz is 200 only while the stream is consuming the slot and Redis
// answers; otherwise 503 with the reasons.
func (d *daemon) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if ok, reason := d.stream.Ready(); !ok {
		problems = append(problems, "replication: "+reason)
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if err := d.redis.Ping(ctx); err != nil {
		problems = append(problems, "redis: "+err.Error())
	}
	if n, age := d.redis.PatternBacklog(); n > 0 && age > d.cfg.PatternLagLimit {
		problems = append(problems, fmt.Sprintf("pattern invalidations: %d pending, the oldest for %s (over CDCD_PATTERN_LAG_LIMIT %s): the confirmed position waits for it",
			n, age.Round(time.Second), d.cfg.PatternLagLimit))
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// Unverifiable invariants are reported, but do not stop invalidation.
	warnings := d.verify.problems()
	switch st := d.wal.status(); st {
	case "":
	case "lost":
		problems = append(problems, "slot wal_status: lost (the server removed WAL the slot needed)")
	default:
		warnings = append(warnings, "slot wal_status: "+st)
	}
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, strings.Join(append(problems, warnings...), "\n"))
		return
	}
	fmt.Fprintln(w, "ready")
	for _, l := range warnings {
		fmt.Fprintln(w, l)
	}
}

// runHealthcheck probes a running daemon, for container health checks in
// images without a shell or curl.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ready := fs.Bool("ready", false, "probe /readyz (streaming and Redis reachable) instead of /healthz")
	addr := fs.String("addr", "", "address of the daemon's HTTP server (default: $CDCD_HTTP_ADDR, or :9380)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *addr == "" {
		*addr = envOr("CDCD_HTTP_ADDR", ":9380")
	}
	host, port, err := net.SplitHostPort(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "cdcd healthcheck: address %q is not host:port\n", *addr)
		return exitUsage
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+path, nil)
	if err != nil {
		fmt.Fprintln(stderr, "cdcd healthcheck:", err)
		return exitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "cdcd healthcheck:", err)
		return exitFailure
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	fmt.Fprint(stdout, string(body))
	if resp.StatusCode != http.StatusOK {
		return exitFailure
	}
	return exitOK
}
