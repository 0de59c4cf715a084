// Package gitmirror keeps the coordinator's bare mirrors of job repositories
// and serves them read-only over git's smart HTTP protocol.
//
// The coordinator is the only place that holds a repository's real remote
// URL and credentials. Before a job can run, Mirrors.Ensure makes sure the
// job's commit is in the mirror, fetching it from the remote on demand; the
// executor then fetches exactly that commit from the coordinator through
// Mirrors.ServeUploadPack, which never sees the remote's credentials. This
// package does no authorisation: the caller checks the job token and its
// repository binding and passes the name it has authorised.
//
// # Layout
//
// Each repository name gets one bare repository, Root/<encoded name>.git,
// where the encoding replaces "/" by "%2F" (names never contain "%"), so a
// name is always one path component below Root and List can map directories
// back to names. Names are validated (see ValidName) before they touch the
// file system: "..", absolute paths, empty segments and other escapes are
// refused with ErrInvalidName. Root/.tmp holds short-lived files (SSH keys,
// half-created mirrors, mirrors being removed); Root/.home is an empty HOME
// for git and ssh, so no user configuration or key of the coordinator's
// account is ever used.
//
// Every commit that Ensure has made present is pinned by a ref
// refs/airlock/commits/<id>, so garbage collection never drops it even when
// the remote rewrites its branches. Those refs are hidden from ref
// advertisements (uploadpack.hideRefs) but fetchable by id
// (uploadpack.allowAnySHA1InWant).
//
// # Fetching
//
// Ensure fetches branches, tags and the commit id itself in one git fetch.
// Servers that refuse a request for an id they did not advertise (protocol
// v0, or v2 with a hidden id) get a second fetch of branches and tags only;
// a commit still absent after that is ErrCommitNotFound. Concurrent calls for
// one repository are serialised by a per-repository lock and re-check the
// mirror after taking it, so a burst of Ensure calls for one commit costs one
// fetch. Calls that find the commit already present never take the lock.
//
// # Credentials
//
// Credentials never reach the mirror's config, a process's argv (readable by
// everyone in /proc) or a log line:
//
//   - HTTPS user and password or token: a credential helper, configured
//     through GIT_CONFIG_COUNT/KEY/VALUE in git's environment, prints them
//     from environment variables of the git process, and only for the
//     remote's own host (a redirect to another host gets nothing). System
//     and global git configuration are disabled, so no other helper can
//     store them.
//   - SSH private key: written to a 0600 file in a 0700 directory under
//     Root/.tmp for the duration of one git command and removed afterwards;
//     GIT_SSH_COMMAND names the file (the path, never the key).
//
// Error messages and log lines pass through a redactor that replaces every
// secret of the remote, so even a remote that echoes a credential cannot
// leak it through this package.
//
// # SSH host keys
//
// With Remote.KnownHosts set, ssh checks the host key strictly against it.
// Without it the policy is trust on first use, per mirror: the first
// connection records the host key in the mirror's own known_hosts file
// (inside the mirror directory, removed with it), and every later
// connection must present the same key or fail. ssh runs with BatchMode, no
// agent, no user configuration and only the given key.
//
// # Hangs
//
// Every git process runs with a timeout in its own process group, killed
// as a group when the timeout or the caller's context ends. Terminal and
// askpass prompts are disabled (GIT_TERMINAL_PROMPT=0, no askpass variables
// in the environment), HTTP transfers slower than 1 KB/s for a minute are
// aborted, and ssh uses a connect timeout and keep-alives.
//
// # Serving
//
// ServeUploadPack answers only GET .../info/refs?service=git-upload-pack and
// POST .../git-upload-pack, by running git upload-pack --stateless-rpc with
// the client's Git-Protocol header passed through (protocol v2 when the
// client asks for it). Push (git-receive-pack) is 403; the dumb protocol
// and every other path are 404. Request bodies may be gzip-compressed.
package gitmirror
