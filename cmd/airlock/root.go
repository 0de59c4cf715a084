package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit statuses. `airlock submit --follow` mirrors the job's outcome.
const (
	exitOK          = 0 // success; the job succeeded
	exitJobFailed   = 1 // the job's own code failed (non-zero exit, timeout)
	exitUsage       = 2 // bad flags, a bad spec, an input the coordinator refused
	exitJobCanceled = 3 // the job was canceled
	exitJobErrored  = 4 // the system could not run the job
	exitSystem      = 5 // the coordinator could not be reached or failed
)

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func exitf(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "airlock",
		Short: "Run untrusted code safely: a coordinator, executors and sandboxes",
		Long: `Airlock runs jobs — an image plus commands, over a repository checkout — in
sandboxes that can reach their workspace and the public internet, and nothing else.

Every flag has an environment twin: --max-jobs is AIRLOCK_MAX_JOBS. Tokens and
secrets are read from the environment or from files, never from flags.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			return applyEnvTwins(cmd)
		},
	}
	root.AddCommand(
		newUpCommand(),
		newCoordinatorCommand(),
		newExecutorCommand(),
		newSubmitCommand(),
		newLogsCommand(),
		newJobsCommand(),
		newShowCommand(),
		newCancelCommand(),
		newRetryCommand(),
		newExecutorsCommand(),
		newReposCommand(),
		newArtifactsCommand(),
		newMigrateStoreCommand(),
		newVersionCommand(),
	)
	annotateEnvTwins(root)
	return root
}

// annotateEnvTwins appends each flag's environment twin to its help text.
func annotateEnvTwins(cmd *cobra.Command) {
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != "help" && !strings.Contains(f.Usage, "env "+envName(f.Name)) {
			f.Usage += " [env " + envName(f.Name) + "]"
		}
	})
	for _, sub := range cmd.Commands() {
		annotateEnvTwins(sub)
	}
}

// envName is the environment twin of a flag: --max-jobs → AIRLOCK_MAX_JOBS.
func envName(flag string) string {
	return "AIRLOCK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// applyEnvTwins sets every flag the user did not pass from its AIRLOCK_*
// environment twin, so `AIRLOCK_URL=… airlock jobs` works like `--url …`.
func applyEnvTwins(cmd *cobra.Command) error {
	var err error
	visit := func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "help" {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if e := f.Value.Set(v); e != nil {
			err = exitf(exitUsage, "%s=%q: %v", envName(f.Name), v, e)
		}
	}
	cmd.Flags().VisitAll(visit)
	cmd.InheritedFlags().VisitAll(visit)
	return err
}

// signalContext returns a context cancelled by the first SIGINT or SIGTERM,
// for the short-lived client verbs.
func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}
