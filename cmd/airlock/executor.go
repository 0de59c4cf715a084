package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/executor"
	"github.com/airlock-run/airlock/internal/sandbox/runtimes"
)

// executorConfig is everything `airlock executor` needs; tests build it directly.
type executorConfig struct {
	URL          string
	TokenFile    string
	CAFile       string
	Name         string
	Queues       []string
	MaxJobs      int
	Runtime      string
	WorkDir      string
	DrainTimeout time.Duration
	KillGrace    time.Duration
}

func (c *executorConfig) register(cmd *cobra.Command, withConnection bool) {
	f := cmd.Flags()
	if withConnection {
		f.StringVar(&c.URL, "url", "http://127.0.0.1:8420", "coordinator URL")
		f.StringVar(&c.TokenFile, "token-file", "", "file holding the executor token (or put the token in AIRLOCK_EXECUTOR_TOKEN)")
		f.StringVar(&c.CAFile, "ca-file", "", "PEM file of the CA that signed the coordinator's certificate")
		f.StringVar(&c.Name, "name", "", "executor name (default: hostname plus a random suffix, fresh at every start)")
		f.StringVar(&c.WorkDir, "work-dir", filepath.Join(defaultDataDir(), "work"), "directory for job workspaces")
	}
	f.StringSliceVar(&c.Queues, "queues", []string{"default"}, "queues to take jobs from (repeat or comma-separate)")
	f.IntVar(&c.MaxJobs, "max-jobs", 1, "most jobs run at once")
	f.StringVar(&c.Runtime, "runtime", runtimes.Auto, "sandbox runtime: auto picks the strongest available; shell is for development and isolates nothing")
	f.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Minute, "on SIGTERM, how long running jobs may finish before they are cancelled")
	f.DurationVar(&c.KillGrace, "kill-grace", 5*time.Second, "when a step is cancelled or times out, how long its processes get between SIGTERM and SIGKILL")
}

func newExecutorCommand() *cobra.Command {
	var cfg executorConfig
	cmd := &cobra.Command{
		Use:   "executor",
		Short: "Run an executor: claim jobs from the coordinator and run their steps in sandboxes",
		Long: `Run an executor. It dials out to the coordinator (no inbound ports), claims jobs
from its queues under a lease, runs each step in a fresh sandbox, streams logs
with secrets redacted, heartbeats, and reports each outcome.

Trust: the executor holds only the secrets of the jobs it is running; the job
steps are untrusted and see only their workspace and what their network policy
allows. The shell runtime isolates nothing and is for development only.

SIGTERM or Ctrl-C drains: no new claims, running jobs get --drain-timeout to
finish, then are cancelled and reported. A second signal cancels them at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger()
			token := os.Getenv("AIRLOCK_EXECUTOR_TOKEN")
			if token == "" {
				if cfg.TokenFile == "" {
					return exitf(exitUsage, "no executor token: set AIRLOCK_EXECUTOR_TOKEN or --token-file")
				}
				t, err := readSecretFile(cfg.TokenFile)
				if err != nil {
					return exitf(exitUsage, "--token-file: %v", err)
				}
				token = t
			}
			var opts []api.ClientOption
			if cfg.CAFile != "" {
				tc, err := api.ClientTLSConfig(cfg.CAFile)
				if err != nil {
					return exitf(exitUsage, "--ca-file: %v", err)
				}
				opts = append(opts, api.WithTLSConfig(tc))
			}
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)
			return runExecutor(cmd.Context(), log, cfg, api.NewClient(cfg.URL, token, opts...), sigs)
		},
	}
	cfg.register(cmd, true)
	cmd.AddCommand(newValidateCommand(), newInstallCommand())
	return cmd
}

// runExecutor runs an executor until the first signal, then drains: a second
// signal, the drain timeout or the end of ctx cancels the running jobs.
func runExecutor(ctx context.Context, log *slog.Logger, cfg executorConfig, c *api.Client, sigs <-chan os.Signal) error {
	if cfg.MaxJobs < 1 {
		return exitf(exitUsage, "--max-jobs %d: must be at least 1", cfg.MaxJobs)
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return exitf(exitSystem, "creating --work-dir %s: %v", cfg.WorkDir, err)
	}
	rt, err := runtimes.Open(cfg.Runtime, runtimes.Options{WorkRoot: cfg.WorkDir, Logger: log})
	if err != nil {
		return exitf(exitUsage, "--runtime %s: %v", cfg.Runtime, err)
	}
	ex, err := executor.New(executor.Config{
		Name:         cfg.Name,
		Version:      buildVersion(),
		Queues:       cfg.Queues,
		MaxJobs:      cfg.MaxJobs,
		Runtime:      rt,
		DrainTimeout: cfg.DrainTimeout,
		KillGrace:    cfg.KillGrace,
		Logger:       log,
	}, c)
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	if err := ex.Run(ctx, sigs); err != nil {
		log.Warn("executor stopped with jobs cancelled", "error", err)
	}
	log.Info("executor stopped")
	return nil
}
