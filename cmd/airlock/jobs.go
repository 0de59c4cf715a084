package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job"
)

func newJobsCommand() *cobra.Command {
	var cf clientFlags
	var states, queues []string
	var limit int
	var cursor string
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			opts := api.ListOptions{Queues: queues, Limit: limit, Cursor: cursor}
			for _, s := range states {
				st := job.State(s)
				if !st.Valid() {
					return exitf(exitUsage, "--state %q: not a state (one of %s)", s, stateNames())
				}
				opts.States = append(opts.States, st)
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.List(ctx, opts)
			if err != nil {
				return apiExit("listing jobs", err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tQUEUE\tSTATE\tATTEMPT\tCREATED\tDURATION\tREASON")
			for _, j := range list.Jobs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", j.ID, j.Queue, stateText(&j), j.Attempt, j.MaxAttempts,
					ago(j.CreatedAt), duration(&j), j.Reason)
			}
			tw.Flush()
			if list.NextCursor != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: airlock jobs --cursor %s\n", list.NextCursor)
			}
			return nil
		},
	}
	cf.register(cmd)
	cmd.Flags().StringSliceVar(&states, "state", nil, "only jobs in these states (repeat or comma-separate)")
	cmd.Flags().StringSliceVar(&queues, "queue", nil, "only jobs of these queues")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many jobs")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue from a previous page")
	return cmd
}

func stateNames() string {
	var s []string
	for _, st := range job.States {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func stateText(j *api.Job) string {
	if j.CancelRequested && !j.State.Terminal() {
		return string(j.State) + " (canceling)"
	}
	return string(j.State)
}

func duration(j *api.Job) string {
	if j.StartedAt == nil {
		return "-"
	}
	end := time.Now()
	if j.FinishedAt != nil {
		end = *j.FinishedAt
	}
	return end.Sub(*j.StartedAt).Round(time.Millisecond).String()
}
