package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newExecutorsCommand() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "executors",
		Short: "List the executors the coordinator has seen: version, runtime, queues, load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Executors(ctx)
			if err != nil {
				return apiExit("listing executors", err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tOS/ARCH\tRUNTIME\tQUEUES\tRUNNING\tLAST SEEN")
			for _, e := range list.Executors {
				fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%d/%d\t%s\n", e.Name, e.Version, e.OS, e.Arch, e.Runtime,
					strings.Join(e.Queues, ","), e.Running, e.MaxJobs, ago(e.LastSeen))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	return cmd
}
