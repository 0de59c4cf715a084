package main

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/sandbox/runtimes"
)

func newValidateCommand() *cobra.Command {
	var (
		runtime, workDir string
		asJSON           bool
	)
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Report, per sandbox runtime, what this host has and what is missing",
		Long: `Report, for every sandbox runtime this build knows, what this host has and what
is missing (binaries and versions, kernel features, cgroups, user namespaces).
It changes nothing. With --runtime, the exit status says whether that runtime
can run here (0) or not (2): an executor configured for it refuses to start
with the same report, never falling back to a weaker runtime.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			reports := runtimes.Check(runtimes.Options{WorkRoot: workDir})
			if runtime != "" && runtime != runtimes.Auto {
				var keep []runtimes.Report
				for _, r := range reports {
					if r.Runtime == runtime {
						keep = append(keep, r)
					}
				}
				if len(keep) == 0 {
					return exitf(exitUsage, "--runtime %q: unknown runtime (known: %v)", runtime, runtimes.Names())
				}
				reports = keep
			}
			if err := printReports(cmd.OutOrStdout(), reports, asJSON); err != nil {
				return err
			}
			if runtime != "" && runtime != runtimes.Auto && !reports[0].Ready {
				return &exitError{code: exitUsage}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&runtime, "runtime", "", "report only this runtime, and exit 2 if it cannot run here")
	cmd.Flags().StringVar(&workDir, "work-dir", filepath.Join(defaultDataDir(), "work"), "the executor's work directory (its permissions matter to some runtimes)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printReports prints runtime reports as a table, or as JSON.
func printReports(w io.Writer, reports []runtimes.Report, asJSON bool) error {
	if asJSON {
		return printJSON(w, reports)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range reports {
		status := "ready"
		if !r.Ready {
			status = "NOT READY"
		}
		iso := "isolates"
		if !r.Isolates {
			iso = "isolates nothing"
		}
		fmt.Fprintf(tw, "%s\t%s\t(%s)\n", r.Runtime, status, iso)
		for _, it := range r.Items {
			mark := "ok"
			if !it.OK {
				mark = "MISSING"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", it.Name, mark, it.Detail)
		}
	}
	return tw.Flush()
}
