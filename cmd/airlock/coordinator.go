package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/blobstore/dirstore"
	"github.com/airlock-run/airlock/internal/coordinator"
	"github.com/airlock-run/airlock/internal/gitmirror"
	"github.com/airlock-run/airlock/internal/job"
	"github.com/airlock-run/airlock/internal/queue"
	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
)

// coordinatorConfig is everything `airlock coordinator` needs; tests build it directly.
type coordinatorConfig struct {
	Addr               string
	DataDir            string
	Store              string
	TLSCert, TLSKey    string
	ClientTokensFile   string
	ExecutorTokensFile string
	SecretsFile        string
	Lease              time.Duration
	HeartbeatInterval  time.Duration
	ClaimWait          time.Duration
	LogLimit           int64
	Retention          time.Duration
	BlobDir            string
	ArtifactLimit      int64
	FileLimit          int64
}

func (c *coordinatorConfig) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.Addr, "addr", ":8420", "address to listen on")
	f.StringVar(&c.DataDir, "data-dir", defaultDataDir(), "directory for the SQLite database and other state")
	f.StringVar(&c.Store, "store", "", "queue store: a SQLite file path, sqlite:///path, or postgres://user@host/db for several replicas (default: DATA_DIR/airlock.db)")
	f.StringVar(&c.TLSCert, "tls-cert", "", "PEM certificate file; with --tls-key, serve HTTPS")
	f.StringVar(&c.TLSKey, "tls-key", "", "PEM private key file for --tls-cert")
	f.StringVar(&c.ClientTokensFile, "client-tokens-file", "", "file of client tokens, one per line (also: AIRLOCK_CLIENT_TOKENS, comma-separated)")
	f.StringVar(&c.ExecutorTokensFile, "executor-tokens-file", "", "file of executor tokens, one per line (also: AIRLOCK_EXECUTOR_TOKENS, comma-separated)")
	f.StringVar(&c.SecretsFile, "secrets-file", "", "file of job secrets as NAME=value lines (also: AIRLOCK_SECRET_<NAME> variables)")
	f.DurationVar(&c.Lease, "lease", 30*time.Second, "how long an attempt lives without a heartbeat before it is re-queued")
	f.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "how often executors heartbeat (also the cancellation latency)")
	f.DurationVar(&c.ClaimWait, "claim-wait", 30*time.Second, "how long a claim long-poll is held open when no job is queued")
	f.Int64Var(&c.LogLimit, "log-limit", 64<<20, "most log bytes kept per attempt (head and tail are kept, the middle is omitted)")
	f.DurationVar(&c.Retention, "retention", 30*24*time.Hour, "how long finished jobs are kept with their logs and artifacts (0 keeps them forever)")
	f.StringVar(&c.BlobDir, "blob-dir", "", "directory of artifacts and uploaded files (default DATA_DIR/blobs); replicas must share it")
	f.Int64Var(&c.ArtifactLimit, "artifact-limit", coordinator.DefaultArtifactLimit, "most bytes of compressed artifacts kept per attempt")
	f.Int64Var(&c.FileLimit, "file-limit", coordinator.DefaultFileLimit, "most bytes of one uploaded job file")
}

func newCoordinatorCommand() *cobra.Command {
	var cfg coordinatorConfig
	cmd := &cobra.Command{
		Use:   "coordinator",
		Short: "Run the coordinator: the job queue, logs and the API executors and clients talk to",
		Long: `Run the coordinator. It owns the job queue (SQLite by default), hands jobs to
executors over long-poll claims, stores logs and results, and serves the API.
It never runs job code.

Trust: the coordinator holds job secrets and every token's hash; put it behind
TLS (--tls-cert/--tls-key) whenever executors or clients reach it over a network.
Tokens come from AIRLOCK_CLIENT_TOKENS / AIRLOCK_EXECUTOR_TOKENS or token files.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			log := newLogger()
			clientTokens, err := readTokenList("AIRLOCK_CLIENT_TOKENS", cfg.ClientTokensFile)
			if err != nil {
				return exitf(exitUsage, "client tokens: %v", err)
			}
			executorTokens, err := readTokenList("AIRLOCK_EXECUTOR_TOKENS", cfg.ExecutorTokensFile)
			if err != nil {
				return exitf(exitUsage, "executor tokens: %v", err)
			}
			ln, err := net.Listen("tcp", cfg.Addr)
			if err != nil {
				return exitf(exitSystem, "listening on %s: %v", cfg.Addr, err)
			}
			if cfg.TLSCert == "" && !isLoopback(ln.Addr()) {
				log.Warn("serving plain HTTP on a non-loopback address: tokens and secrets cross the network in clear; use --tls-cert and --tls-key", "addr", ln.Addr().String())
			}
			return runCoordinator(ctx, log, cfg, clientTokens, executorTokens, ln, nil)
		},
	}
	cfg.register(cmd)
	return cmd
}

// runCoordinator opens the store, serves the API on ln until ctx is done, and
// shuts down cleanly. ready, if set, is called once the server is serving.
func runCoordinator(ctx context.Context, log *slog.Logger, cfg coordinatorConfig, clientTokens, executorTokens []string, ln net.Listener, ready func()) error {
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return exitf(exitUsage, "--tls-cert and --tls-key go together")
	}
	secrets, err := readSecrets(cfg.SecretsFile)
	if err != nil {
		return exitf(exitUsage, "secrets: %v", err)
	}
	store, peers, err := openStore(ctx, log, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	mirrors, err := gitmirror.New(gitmirror.Options{Root: filepath.Join(cfg.DataDir, "mirrors"), Logger: log})
	if err != nil {
		return exitf(exitSystem, "repository mirrors: %v", err)
	}
	blobDir := cfg.BlobDir
	if blobDir == "" {
		blobDir = filepath.Join(cfg.DataDir, "blobs")
	}
	blobs, err := dirstore.Open(blobDir, dirstore.Options{})
	if err != nil {
		return exitf(exitSystem, "blob store: %v", err)
	}
	defer blobs.Close()
	tmp := filepath.Join(cfg.DataDir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return exitf(exitSystem, "temporary directory: %v", err)
	}
	srv, err := coordinator.New(coordinator.Config{
		Peers:             peers,
		Retention:         cfg.Retention,
		ArtifactLimit:     cfg.ArtifactLimit,
		FileLimit:         cfg.FileLimit,
		TempDir:           tmp,
		Store:             store,
		Mirrors:           mirrors,
		Blobs:             blobs,
		ClientTokens:      clientTokens,
		ExecutorTokens:    executorTokens,
		Secrets:           secrets,
		Limits:            job.DefaultLimits(),
		Lease:             cfg.Lease,
		HeartbeatInterval: cfg.HeartbeatInterval,
		ClaimWait:         cfg.ClaimWait,
		LogLimit:          cfg.LogLimit,
		Logger:            log,
	})
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	if err := srv.Start(ctx); err != nil {
		return exitf(exitSystem, "starting the coordinator: %v", err)
	}
	scheme := "http"
	if cfg.TLSCert != "" {
		scheme = "https"
	}
	log.Info("coordinator serving", "url", fmt.Sprintf("%s://%s", scheme, ln.Addr()), "store", storeDesc(cfg), "secrets", len(secrets))
	if ready != nil {
		ready()
	}
	serveErr := srv.Serve(ctx, ln, cfg.TLSCert, cfg.TLSKey)
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Stop(stopCtx); err != nil {
		log.Warn("stopping the coordinator", "error", err)
	}
	if serveErr != nil {
		return exitf(exitSystem, "serving: %v", serveErr)
	}
	return nil
}

// isPostgres reports whether a --store value names a PostgreSQL database.
func isPostgres(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

func storePath(cfg coordinatorConfig) (string, error) {
	s := cfg.Store
	switch {
	case s == "":
		return filepath.Join(cfg.DataDir, "airlock.db"), nil
	case strings.HasPrefix(s, "sqlite://"):
		return strings.TrimPrefix(s, "sqlite://"), nil
	case isPostgres(s):
		return "", exitf(exitUsage, "--store %s is not a SQLite store", redactURL(s))
	case strings.Contains(s, "://"):
		return "", exitf(exitUsage, "--store %s: unknown store scheme (use a file path, sqlite:///path or postgres://…)", redactURL(s))
	}
	return s, nil
}

func storeDesc(cfg coordinatorConfig) string {
	if isPostgres(cfg.Store) {
		return redactURL(cfg.Store)
	}
	p, _ := storePath(cfg)
	return "sqlite:" + p
}

// openStore opens the --store; for PostgreSQL it also returns the peers
// through which replicas sharing the database wake each other.
func openStore(ctx context.Context, log *slog.Logger, cfg coordinatorConfig) (queue.Store, coordinator.Peers, error) {
	if isPostgres(cfg.Store) {
		st, err := postgres.Open(ctx, cfg.Store, postgres.Options{Logger: log})
		if err != nil {
			return nil, nil, exitf(exitSystem, "opening the store %s: %v", redactURL(cfg.Store), err)
		}
		return st, postgres.Peers{Store: st}, nil
	}
	path, err := storePath(cfg)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, exitf(exitSystem, "creating %s: %v", filepath.Dir(path), err)
	}
	st, err := sqlite.Open(ctx, path, sqlite.Options{Logger: log})
	if err != nil {
		return nil, nil, exitf(exitSystem, "opening the store %s: %v", path, err)
	}
	return st, nil, nil
}

// redactURL hides a password in a store URL before it is printed.
func redactURL(s string) string {
	if i := strings.Index(s, "://"); i >= 0 {
		rest := s[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if colon := strings.Index(rest[:at], ":"); colon >= 0 {
				return s[:i+3] + rest[:colon] + ":xxxxx" + rest[at:]
			}
		}
	}
	return s
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func newLogger() *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("AIRLOCK_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}
