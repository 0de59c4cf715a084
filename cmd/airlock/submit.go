package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job/specfile"
)

func newSubmitCommand() *cobra.Command {
	var cf clientFlags
	var follow bool
	var queueName string
	var fileFlags []string
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a job from a YAML or JSON spec",
		Long: `Submit a job from a YAML or JSON spec file ("-" reads standard input).

With --follow, stream the job's log until it ends; the exit status then mirrors
the outcome: 0 succeeded, 1 failed, 3 canceled, 4 errored (2 is a bad spec or
usage, 5 a coordinator that could not be reached).

--file LOCAL:REMOTE uploads a local file and writes it into the workspace at
REMOTE (a path relative to it) with its mode and modification time; a
directory brings every regular file under it. A file the coordinator already
holds (the same content) is not sent again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			spec, err := specfile.Load(args[0])
			if err != nil {
				return exitf(exitUsage, "%v", err)
			}
			if queueName != "" {
				spec.Queue = queueName
			}
			files, err := parseFileFlags(fileFlags)
			if err != nil {
				return exitf(exitUsage, "%v", err)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := uploadFiles(ctx, c, &spec, files, cmd.ErrOrStderr()); err != nil {
				return err
			}
			j, err := c.Submit(ctx, spec)
			if err != nil {
				return apiExit("submitting "+args[0], err)
			}
			out := cmd.OutOrStdout()
			if !follow {
				if cf.json {
					return printJSON(out, j)
				}
				fmt.Fprintf(out, "job %d queued on %q\n", j.ID, j.Queue)
				return nil
			}
			if !cf.json {
				fmt.Fprintf(cmd.ErrOrStderr(), "job %d queued on %q; following its log (Ctrl-C stops following, not the job)\n", j.ID, j.Queue)
			}
			return followToEnd(cmd, c, j.ID, cf.json)
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "stream the log until the job ends; exit status mirrors the outcome")
	cmd.Flags().StringVar(&queueName, "queue", "", "override the spec's queue")
	cmd.Flags().StringArrayVar(&fileFlags, "file", nil, "upload LOCAL[:REMOTE] as a job file (repeatable; a directory brings its files)")
	return cmd
}

// followToEnd streams a job's log (each attempt in turn) until the job is
// terminal, then prints a summary and returns the outcome's exit status.
func followToEnd(cmd *cobra.Command, c *api.Client, id int64, asJSON bool) error {
	ctx, stop := signalContext(cmd.Context())
	defer stop()
	logOut := cmd.OutOrStdout()
	if asJSON {
		logOut = cmd.ErrOrStderr()
	}
	shown := 0 // the last attempt whose log was streamed
	for {
		j, err := c.Get(ctx, id)
		if err != nil {
			return apiExit(fmt.Sprintf("getting job %d", id), err)
		}
		if j.State.Terminal() && shown >= j.Attempt {
			return summarize(cmd, j, asJSON)
		}
		opts := api.LogOptions{Attempt: j.Attempt, Follow: true}
		switch {
		case j.Attempt == 0:
			// Never claimed yet: attempt 0 waits for the first attempt and
			// streams it from its first byte.
			opts.Attempt = 0
		case j.Attempt <= shown:
			// Re-queued after an attempt we already showed: wait for the next.
			select {
			case <-ctx.Done():
				return exitf(exitSystem, "interrupted")
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if shown > 0 && !asJSON {
			fmt.Fprintf(cmd.ErrOrStderr(), "--- attempt %d ---\n", max(opts.Attempt, shown+1))
		}
		if _, err := c.Logs(ctx, id, opts, logOut); err != nil {
			return apiExit(fmt.Sprintf("following job %d", id), err)
		}
		shown = max(opts.Attempt, shown+1)
	}
}

func summarize(cmd *cobra.Command, j *api.Job, asJSON bool) error {
	if asJSON {
		if err := printJSON(cmd.OutOrStdout(), j); err != nil {
			return err
		}
		if err := outcomeExit(j); err != nil {
			return &exitError{code: err.(*exitError).code}
		}
		return nil
	}
	took := ""
	if j.StartedAt != nil && j.FinishedAt != nil {
		took = " in " + j.FinishedAt.Sub(*j.StartedAt).Round(time.Millisecond).String()
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "job %d %s%s (attempt %d)\n", j.ID, j.State, took, j.Attempt)
	return outcomeExit(j)
}
