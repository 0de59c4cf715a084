package main

// `airlock artifacts`: list or fetch what a job's artifacts globs collected.

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/artifact"
)

func newArtifactsCommand() *cobra.Command {
	var (
		cf              clientFlags
		attempt         int
		output, extract string
	)
	cmd := &cobra.Command{
		Use:   "artifacts JOB",
		Short: "List a job's artifacts, or download them (-o FILE) or unpack them (--extract DIR)",
		Long: `Without -o or --extract, lists the attempts that uploaded artifacts. With -o, writes
an attempt's artifacts (a gzip-compressed tar) to FILE ("-" for standard output); with
--extract, unpacks them into DIR, refusing paths that would leave it. The attempt is
the latest that has artifacts unless --attempt says otherwise.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || id <= 0 {
				return exitf(exitUsage, "job id %q is not a positive integer", args[0])
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Artifacts(ctx, id)
			if err != nil {
				return apiExit("listing artifacts", err)
			}
			if output == "" && extract == "" {
				if cf.json {
					return printJSON(cmd.OutOrStdout(), list)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ATTEMPT\tSIZE\tSHA256\tCREATED")
				for _, a := range list.Artifacts {
					fmt.Fprintf(tw, "%d\t%d\t%s\t%s\n", a.Attempt, a.Size, a.SHA256, a.CreatedAt.Local().Format(time.RFC3339))
				}
				return tw.Flush()
			}
			if attempt == 0 {
				for _, a := range list.Artifacts {
					attempt = max(attempt, a.Attempt)
				}
				if attempt == 0 {
					return exitf(exitUsage, "job %d has no artifacts", id)
				}
			}
			if output != "" {
				w := cmd.OutOrStdout()
				if output != "-" {
					f, err := os.Create(output)
					if err != nil {
						return exitf(exitUsage, "-o: %v", err)
					}
					defer f.Close()
					w = f
				}
				if _, err := c.DownloadArtifacts(ctx, id, attempt, w); err != nil {
					return apiExit("downloading artifacts", err)
				}
				return nil
			}
			if err := os.MkdirAll(extract, 0o755); err != nil {
				return exitf(exitUsage, "--extract: %v", err)
			}
			pr, pw := io.Pipe()
			go func() {
				_, err := c.DownloadArtifacts(ctx, id, attempt, pw)
				pw.CloseWithError(err)
			}()
			m, err := artifact.Extract(ctx, pr, extract, 0)
			pr.CloseWithError(err)
			if err != nil {
				return apiExit("extracting artifacts", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "extracted %d files (%d bytes) of job %d attempt %d into %s\n", len(m.Files), m.Size, id, attempt, extract)
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.IntVar(&attempt, "attempt", 0, "the attempt (default: the latest with artifacts)")
	f.StringVarP(&output, "output", "o", "", "write the tar.gz to FILE (- for standard output)")
	f.StringVar(&extract, "extract", "", "unpack into DIR")
	return cmd
}
