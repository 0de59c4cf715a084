// Package artifact moves files between a job's workspace and byte streams, on
// the executor's side of the wire: Collect packs what a job's artifact
// patterns select into a gzip-compressed tar stream for the coordinator's
// blob store, Extract unpacks such a stream (for the CLI's downloads and for
// tests), and WriteFiles puts a job's files into its workspace before the
// steps run.
//
// # Trust
//
// The workspace is written by untrusted job code and a tar stream may come
// from anywhere, so every file operation goes through an os.Root: no path,
// and no symbolic link planted by the job, leads outside the directory being
// read or written.
//
// # Patterns
//
// Artifact patterns (job.Spec.Artifacts) are slash-separated paths relative
// to the workspace. Each segment is matched with path.Match ("*", "?",
// "[a-z]", "\\" escapes; "*" does not cross a slash). A segment that is
// exactly "**" matches any number of segments, none included: "**/*.scip"
// finds index files at any depth, "out/**" everything below out. A pattern
// that matches a directory selects everything below it, so "out" and
// "out/**" mean the same.
//
// # What is collected
//
// Regular files, with their permission bits (setuid, setgid and sticky are
// dropped) and modification times; no owners. Symbolic links are kept as
// links when their target is relative and stays inside the workspace, and
// skipped otherwise (Manifest.Skipped says so), as are devices, pipes and
// sockets. A link is never followed, not even to a directory, and empty
// directories are not collected.
package artifact
