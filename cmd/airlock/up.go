package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/api"
	"github.com/airlock-run/airlock/internal/job/specfile"
	"github.com/airlock-run/airlock/internal/sandbox/runtimes"
)

func newUpCommand() *cobra.Command {
	var (
		coord         coordinatorConfig
		exec          executorConfig
		demo          string
		exitAfterDemo bool
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a coordinator and one executor on this machine, for a first try",
		Long: `Run a coordinator (SQLite in --data-dir) and one executor in one process,
listening on loopback. Prints the URL and the client token; the other verbs
(submit, logs, jobs, ...) find both in the data dir without flags.

With --demo FILE, submits that spec once everything is up and streams its log.
Ctrl-C stops cleanly: the executor drains, then the coordinator stops.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger()
			sigs := make(chan os.Signal, 2)
			signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sigs)

			// Mode 0711: the sandboxes reach their mounts under the work
			// directory inside it from a user namespace; nothing in it can be
			// listed, and the database and tokens are mode 0600.
			if err := os.MkdirAll(coord.DataDir, 0o711); err != nil {
				return exitf(exitSystem, "creating --data-dir: %v", err)
			}
			if exec.Runtime != "shell" {
				if err := os.Chmod(coord.DataDir, 0o711); err != nil {
					return exitf(exitSystem, "--data-dir: %v", err)
				}
			}
			clientToken, err := ensureToken(coord.DataDir, "client-token", "alc_")
			if err != nil {
				return exitf(exitSystem, "%v", err)
			}
			executorToken, err := ensureToken(coord.DataDir, "executor-token", "ale_")
			if err != nil {
				return exitf(exitSystem, "%v", err)
			}
			ln, err := net.Listen("tcp", coord.Addr)
			if err != nil {
				return exitf(exitSystem, "listening on %s: %v (is another `airlock up` running?)", coord.Addr, err)
			}
			url := "http://" + ln.Addr().String()
			if err := os.WriteFile(filepath.Join(coord.DataDir, "url"), []byte(url+"\n"), 0o600); err != nil {
				return exitf(exitSystem, "%v", err)
			}

			coordCtx, stopCoord := context.WithCancel(context.WithoutCancel(cmd.Context()))
			defer stopCoord()
			ready := make(chan struct{})
			coordDone := make(chan error, 1)
			go func() {
				coordDone <- runCoordinator(coordCtx, log.With("component", "coordinator"), coord,
					[]string{clientToken}, []string{executorToken}, ln, func() { close(ready) })
			}()
			select {
			case <-ready:
			case err := <-coordDone:
				return err
			}

			exec.URL = url
			exec.WorkDir = filepath.Join(coord.DataDir, "work")
			if exec.DefaultImage == "" && exec.Runtime != "shell" {
				// Steps that name no image (the demo's) run in busybox,
				// made from the host's: no registry is needed for a first try.
				images := filepath.Join(coord.DataDir, "images")
				if err := os.MkdirAll(images, 0o755); err != nil {
					return exitf(exitSystem, "%v", err)
				}
				ref, err := runtimes.BusyboxImage(images)
				if err != nil {
					log.Warn("no default image for steps that name none", "error", err)
				} else {
					exec.DefaultImage = ref
					exec.LocalImages = append(exec.LocalImages, images)
				}
			}
			execSigs := make(chan os.Signal, 2)
			execCtx, stopExec := context.WithCancel(cmd.Context())
			defer stopExec()
			execDone := make(chan error, 1)
			chosen := make(chan string, 1)
			go func() {
				execDone <- runExecutor(execCtx, log.With("component", "executor"), exec,
					api.NewClient(url, executorToken), execSigs, func(rt string) { chosen <- rt })
			}()
			var runtimeName string
			select {
			case runtimeName = <-chosen:
			case err := <-execDone:
				stopCoord()
				<-coordDone
				return err
			}
			if exec.Runtime == "auto" {
				runtimeName += " (the strongest this host can run)"
			}

			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "\nAirlock is up.\n  URL:          %s\n  client token: %s\n  data dir:     %s\n  runtime:      %s\n\n",
				url, clientToken, coord.DataDir, runtimeName)
			fmt.Fprintf(out, "Submit a job from another terminal:\n  airlock submit examples/hello.yaml --follow\n\nCtrl-C stops.\n\n")

			demoErr := make(chan error, 1)
			if demo != "" {
				go func() { demoErr <- runDemo(cmd, url, clientToken, demo) }()
			}
			var result error
			select {
			case s := <-sigs:
				log.Info("stopping", "signal", s.String())
				execSigs <- s
			case err := <-execDone:
				stopCoord()
				<-coordDone
				return err
			case err := <-demoErr:
				result = err
				if !exitAfterDemo {
					if err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "demo: %v\n", err)
					}
					result = nil
					s := <-sigs
					log.Info("stopping", "signal", s.String())
				}
				execSigs <- syscall.SIGTERM
			}
			// A second Ctrl-C during the drain cancels the running jobs.
			go func() {
				if s, ok := <-sigs; ok {
					execSigs <- s
				}
			}()
			if err := <-execDone; err != nil {
				log.Warn("executor", "error", err)
			}
			stopCoord()
			if err := <-coordDone; err != nil {
				log.Warn("coordinator", "error", err)
			}
			return result
		},
	}
	coord.register(cmd)
	exec.register(cmd, false)
	// up listens on loopback only, and keeps short drains: it is for a first try.
	cmd.Flags().Lookup("addr").DefValue = "127.0.0.1:8420"
	_ = cmd.Flags().Set("addr", "127.0.0.1:8420")
	cmd.Flags().Lookup("addr").Changed = false
	cmd.Flags().Lookup("drain-timeout").DefValue = "30s"
	_ = cmd.Flags().Set("drain-timeout", "30s")
	cmd.Flags().Lookup("drain-timeout").Changed = false
	cmd.Flags().Lookup("max-jobs").DefValue = "2"
	_ = cmd.Flags().Set("max-jobs", "2")
	cmd.Flags().Lookup("max-jobs").Changed = false
	cmd.Flags().StringVar(&demo, "demo", "", "submit this spec file once up and stream its log")
	cmd.Flags().BoolVar(&exitAfterDemo, "exit-after-demo", false, "with --demo: stop once the demo job ends, exiting with its outcome")
	return cmd
}

// runDemo submits the demo spec and follows it to the end.
func runDemo(cmd *cobra.Command, url, token, file string) error {
	spec, err := specfile.Load(file)
	if err != nil {
		return exitf(exitUsage, "%v", err)
	}
	c := api.NewClient(url, token)
	ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
	defer cancel()
	j, err := c.Submit(ctx, spec)
	if err != nil {
		return apiExit("submitting the demo", err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "demo: job %d submitted from %s; its log follows\n", j.ID, file)
	err = followToEnd(cmd, c, j.ID, false)
	var ee *exitError
	if errors.As(err, &ee) && ee.code == exitOK {
		return nil
	}
	return err
}
