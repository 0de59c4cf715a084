package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
)

func newLogsCommand() *cobra.Command {
	var cf clientFlags
	var follow bool
	var attempt int
	var offset int64
	cmd := &cobra.Command{
		Use:   "logs ID",
		Short: "Print a job's log; -f follows it live until the job ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			if follow && attempt == 0 {
				return followToEnd(cmd, c, id, false)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			_, err = c.Logs(ctx, id, api.LogOptions{Attempt: attempt, Offset: offset, Follow: follow}, cmd.OutOrStdout())
			return apiExit(fmt.Sprintf("reading the log of job %d", id), err)
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log live until the job ends (across retried attempts)")
	cmd.Flags().IntVar(&attempt, "attempt", 0, "which attempt's log (default: the latest)")
	cmd.Flags().Int64Var(&offset, "offset", 0, "start at this byte offset")
	return cmd
}

func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, exitf(exitUsage, "%q is not a job ID (a positive integer)", s)
	}
	return id, nil
}
