package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/queue/postgres"
	"github.com/airlock-run/airlock/internal/queue/sqlite"
	"github.com/airlock-run/airlock/internal/queue/storecopy"
)

func newMigrateStoreCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "migrate-store --from SQLITE --to POSTGRES",
		Short: "Copy a coordinator's whole queue from SQLite into an empty PostgreSQL database",
		Long: `Copy everything a SQLite store holds — every job with its ID, state, attempts and
logs, the live attempts' tokens, the repository registrations and the executors —
into an empty PostgreSQL database, for moving to several coordinator replicas
(docs/scaling.md). Stop the coordinator first. The SQLite file is not changed;
blobs (artifacts, uploads) are not in the store: keep the blob directory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			log := newLogger()
			if from == "" || to == "" {
				return exitf(exitUsage, "--from and --to are required")
			}
			if !isPostgres(to) {
				return exitf(exitUsage, "--to %s: want a postgres:// URL", redactURL(to))
			}
			path, err := storePath(coordinatorConfig{Store: from})
			if err != nil {
				return err
			}
			if _, err := os.Stat(path); err != nil {
				return exitf(exitUsage, "--from: %v", err)
			}
			src, err := sqlite.Open(ctx, path, sqlite.Options{Logger: log})
			if err != nil {
				return exitf(exitSystem, "opening %s: %v (is the coordinator still running?)", path, err)
			}
			defer src.Close()
			dst, err := postgres.Open(ctx, to, postgres.Options{Logger: log})
			if err != nil {
				return exitf(exitSystem, "opening %s: %v", redactURL(to), err)
			}
			defer dst.Close()
			out := cmd.ErrOrStderr()
			st, err := storecopy.Copy(ctx, src, dst, func(s storecopy.Stats) {
				if s.Jobs%1000 == 0 {
					fmt.Fprintf(out, "%d jobs copied\n", s.Jobs)
				}
			})
			if errors.Is(err, storecopy.ErrNotEmpty) {
				return exitf(exitUsage, "--to %s: %v (migrate into a new database)", redactURL(to), err)
			}
			if err != nil {
				return exitf(exitSystem, "migrating: %v (the destination may hold part of the queue: drop and recreate it before trying again)", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "moved %d jobs (%d attempts, %d log bytes), %d repositories and %d executors from %s to %s\n",
				st.Jobs, st.Attempts, st.LogBytes, st.Repositories, st.Executors, path, redactURL(to))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the SQLite store (a path or sqlite:///path), with the coordinator stopped")
	cmd.Flags().StringVar(&to, "to", "", "an empty PostgreSQL database (postgres://…)")
	return cmd
}
