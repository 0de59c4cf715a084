package main

// `airlock repos`: the repositories registered on the coordinator, which
// jobs name as repository.name.

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlock-run/airlock/internal/job"
)

func newReposCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repos",
		Short: "Register, list and remove the repositories jobs may name (repository.name)",
		Long: `The coordinator fetches a registered repository from its remote into a mirror
and serves it to the executors running jobs that name it. A credential is the
name of a coordinator secret (AIRLOCK_SECRET_<NAME> or --secrets-file on the
coordinator): its value never leaves the coordinator and is never shown.`,
	}
	cmd.AddCommand(newReposAddCommand(), newReposListCommand(), newReposShowCommand(), newReposRemoveCommand())
	return cmd
}

func newReposAddCommand() *cobra.Command {
	var (
		cf                                  clientFlags
		tokenSecret, basicSecret, sshSecret string
		username                            string
	)
	cmd := &cobra.Command{
		Use:   "add NAME URL",
		Short: "Register a repository (or change its registration)",
		Example: `  airlock repos add acme/api https://github.com/acme/api.git --token-secret GITHUB_TOKEN
  airlock repos add acme/tools ssh://git@git.example.com/acme/tools.git --ssh-key-secret DEPLOY_KEY
  airlock repos add oss/lib https://github.com/oss/lib.git`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r := job.Remote{Name: args[0], URL: args[1]}
			n := 0
			for _, s := range []string{tokenSecret, basicSecret, sshSecret} {
				if s != "" {
					n++
				}
			}
			switch {
			case n > 1:
				return exitf(exitUsage, "give one of --token-secret, --basic-secret and --ssh-key-secret")
			case tokenSecret != "":
				r.Credential = &job.Credential{Kind: job.CredentialToken, Username: username, Secret: tokenSecret}
			case basicSecret != "":
				r.Credential = &job.Credential{Kind: job.CredentialBasic, Username: username, Secret: basicSecret}
			case sshSecret != "":
				r.Credential = &job.Credential{Kind: job.CredentialSSH, Secret: sshSecret}
			case username != "":
				return exitf(exitUsage, "--username goes with --token-secret or --basic-secret")
			}
			if err := job.ValidateRemote(r); err != nil {
				return exitf(exitUsage, "%v", err)
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			repo, err := c.PutRepository(ctx, r)
			if err != nil {
				return apiExit("registering the repository", err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), repo)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "repository %s registered: %s (%s)\n", repo.Name, repo.URL, credentialText(repo.Credential))
			return nil
		},
	}
	cf.register(cmd)
	f := cmd.Flags()
	f.StringVar(&tokenSecret, "token-secret", "", "coordinator secret holding an HTTPS access token")
	f.StringVar(&basicSecret, "basic-secret", "", "coordinator secret holding an HTTPS password (with --username)")
	f.StringVar(&sshSecret, "ssh-key-secret", "", "coordinator secret holding an SSH private key (ssh:// URLs)")
	f.StringVar(&username, "username", "", "HTTPS username (default for tokens: x-access-token)")
	return cmd
}

func newReposListCommand() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registered repositories",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			list, err := c.Repositories(ctx)
			if err != nil {
				return apiExit("listing repositories", err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), list)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tURL\tCREDENTIAL\tUPDATED")
			for _, r := range list.Repositories {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.URL, credentialText(r.Credential), ago(r.UpdatedAt))
			}
			return tw.Flush()
		},
	}
	cf.register(cmd)
	return cmd
}

func newReposShowCommand() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one registered repository",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			r, err := c.Repository(ctx, args[0])
			if err != nil {
				return apiExit("reading the repository", err)
			}
			if cf.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "repository %s\nurl        %s\ncredential %s\nregistered %s, updated %s\n",
				r.Name, r.URL, credentialText(r.Credential), ago(r.CreatedAt), ago(r.UpdatedAt))
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

func newReposRemoveCommand() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a registration (jobs naming it are refused from then on)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			c, err := cf.client()
			if err != nil {
				return err
			}
			if err := c.DeleteRepository(ctx, args[0]); err != nil {
				return apiExit("removing the repository", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "repository %s removed\n", args[0])
			return nil
		},
	}
	cf.register(cmd)
	return cmd
}

// credentialText describes a credential without its value (which the
// coordinator never returns anyway).
func credentialText(c *job.Credential) string {
	if c == nil {
		return "no credential"
	}
	who := ""
	if c.Username != "" {
		who = " as " + c.Username
	}
	return fmt.Sprintf("%s%s, from coordinator secret %s", c.Kind, who, c.Secret)
}
