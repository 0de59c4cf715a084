// Package checkout puts a job's repository into its workspace at the job's
// commit, through a per-executor cache of bare repositories, using the git
// program (no library reimplementation of git).
//
// # What a checkout gives
//
// The workspace directory becomes a repository of its own: HEAD detached at
// the exact commit, history of depth 1 unless Params.Full, tags pointing into
// the fetched history only when Params.Tags, a cone-mode sparse checkout when
// Params.Sparse names directories, and origin set to Params.URL, which carries
// no credential. The checkout happens in place: files already in the
// workspace are kept, and a file at a path the commit tracks fails the
// checkout (write job files afterwards to let them win). Submodules are never
// fetched (a gitlink stays an empty directory) and LFS pointers stay pointers:
// no smudge or other filter runs, because no host configuration is read.
//
// # The cache
//
// Root/
//
//	repos/KEY.git/   a bare repository per fetch URL; KEY hashes the URL
//	  airlock-url    the URL, for people reading the directory
//	  airlock-used   its mtime is the last checkout that used the repository
//	tmp/             evicted repositories being removed
//	home/            an empty HOME for git
//	lock             held (flock) by the one Cache using Root
//
// A checkout first brings the cached repository up to what it needs —
// nothing when the cache already has the commit (with its whole history for
// a full checkout), else one fetch of only the missing objects, depth 1 for a
// shallow checkout — and keeps the commit under refs/airlock/commits/. It
// then creates the workspace repository. A shallow checkout fetches the
// commit into it from the cache over git's file transport, which writes the
// commit's objects into a new pack; a full checkout copies the cache's
// object files (pack-objects and index-pack over a large history cost many
// times more than a copy). Either way the workspace has no alternates or hard
// links into the cache, so a sandbox given the workspace can neither read nor
// change the cache. A fetch holds
// the repository exclusively; workspace fetches from it run concurrently with
// each other. Options.MaxBytes bounds the cache: after each checkout the least
// recently used repositories that no checkout is using are removed.
//
// Tags fetched for one job stay in the cache, so a later job asking for tags
// may see a tag the remote has since deleted. A full checkout's workspace
// holds every object the cache holds for the same URL, including other
// commits fetched for other jobs; the cache is per URL, and so per
// repository, which the job may read as a whole anyway.
//
// # Security
//
// The repository is untrusted; the workspace is handed to sandboxes. Git runs
// with a clean environment, no system or global configuration, hooks
// disabled (core.hooksPath=/dev/null), no fsmonitor, only the http(s)
// transport for remotes and the file transport only for the workspace's fetch
// from the cache, no submodule recursion, no credential helpers or prompts, no
// background gc or maintenance, and redirects not followed when a token is
// sent. The token is passed as an http.extraHeader through GIT_CONFIG_VALUE_n
// in the environment of the fetch into the cache alone: it is never in argv,
// never written to a file, never in the workspace, and replaced in the error
// messages built from git's output. See git.go.
//
// The executor must not run git on the host in a workspace after steps have
// run in it: a step can plant hooks and configuration in its .git.
package checkout
