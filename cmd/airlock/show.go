package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
)

func newShowCommand() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show one job: its state, attempts and steps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			j, err := c.Get(ctx, id)
			if err != nil {
				return apiExit(fmt.Sprintf("getting job %d", id), err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), j)
			}
			printJob(cmd, j)
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func printJob(cmd *cobra.Command, j *api.Job) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "job %d  queue %s  priority %d\n", j.ID, j.Queue, j.Priority)
	fmt.Fprintf(w, "state    %s", stateText(j))
	if j.Reason != "" {
		fmt.Fprintf(w, " (%s)", reasonText(j))
	}
	fmt.Fprintf(w, "\ncreated  %s\n", j.CreatedAt.Local().Format(time.RFC3339))
	fmt.Fprintf(w, "attempts %d of %d\n", j.Attempt, j.MaxAttempts)
	for _, a := range j.Attempts {
		fmt.Fprintf(w, "\nattempt %d on %s, started %s", a.Number, a.Executor, a.StartedAt.Local().Format(time.RFC3339))
		if a.Outcome != "" {
			fmt.Fprintf(w, ": %s (%s)", a.Outcome, a.Reason)
			if a.Message != "" {
				fmt.Fprintf(w, " — %s", a.Message)
			}
		}
		fmt.Fprintf(w, "; log %d bytes", a.LogSize)
		if a.EgressDenied > 0 {
			fmt.Fprintf(w, "; %d connection attempts denied by the egress policy", a.EgressDenied)
		}
		fmt.Fprintln(w)
		if len(a.Steps) == 0 {
			continue
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  STEP\tEXIT\tDURATION\tIMAGE\tNOTE")
		for _, s := range a.Steps {
			note := s.Signal
			if s.TimedOut {
				note = "timed out"
			}
			if s.OOMKilled {
				note = "out of memory"
			}
			img := "-"
			if s.Image != "" {
				img = s.Image
				if s.ImageDigest != "" && !strings.Contains(s.Image, s.ImageDigest) {
					img += " (" + s.ImageDigest + ")"
				}
			}
			fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", s.Name, s.ExitCode, s.Duration.Round(time.Millisecond), img, note)
		}
		tw.Flush()
	}
}
