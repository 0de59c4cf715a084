package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
)

func newCancelCommand() *cobra.Command {
	return newJobActionCommand("cancel", "Cancel a job (a running job stops within one heartbeat interval)",
		func(ctx context.Context, c *api.Client, id int64) (*api.Job, error) { return c.Cancel(ctx, id) })
}

func newRetryCommand() *cobra.Command {
	return newJobActionCommand("retry", "Queue a finished job again with a fresh attempt budget",
		func(ctx context.Context, c *api.Client, id int64) (*api.Job, error) { return c.Retry(ctx, id) })
}

// newJobActionCommand builds a verb that does one thing to one job by ID.
func newJobActionCommand(verb, short string, do func(context.Context, *api.Client, int64) (*api.Job, error)) *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   verb + " ID",
		Short: short,
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
			j, err := do(ctx, c, id)
			if err != nil {
				return apiExit(fmt.Sprintf("%s job %d", verb, id), err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), j)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job %d is %s\n", j.ID, stateText(j))
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}
