package gitmirror

import (
	"context"
	"fmt"
	"strings"
)

// mirrorRefspecs keep the mirror's branches and tags equal to the remote's.
var mirrorRefspecs = []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// fetch brings commit into the mirror at dir: branches, tags and the commit
// by id in one fetch; if the server will not serve the id, branches and tags
// alone, and then the commit must be among them. The commit ends up pinned
// by refs/airlock/commits/<id>.
func (m *Mirrors) fetch(ctx context.Context, dir string, r Remote, commit string) error {
	c, cleanup, err := m.remoteCmd(dir, m.opts.FetchTimeout, r)
	if err != nil {
		return err
	}
	defer cleanup()
	pin := "refs/airlock/commits/" + commit
	args := []string{"fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head", "origin"}
	args = append(args, mirrorRefspecs...)

	err = m.run(ctx, c, append(args, "+"+commit+":"+pin)...)
	switch {
	case err == nil:
		if !m.hasCommit(ctx, dir, commit) {
			return fmt.Errorf("%w: %s names an object of %s that is not a commit", ErrCommitNotFound, commit, r.URL)
		}
		return nil
	case ctx.Err() != nil:
		return err
	case isAuthFailure(err):
		return fmt.Errorf("%w: %v", ErrAuthentication, err)
	case !isUnservedID(err):
		return err
	}

	m.log.Debug("remote does not serve commit by id; fetching branches and tags", "repository", r.Name, "commit", commit)
	if err := m.run(ctx, c, args...); err != nil {
		if ctx.Err() == nil && isAuthFailure(err) {
			return fmt.Errorf("%w: %v", ErrAuthentication, err)
		}
		return err
	}
	if !m.hasCommit(ctx, dir, commit) {
		return fmt.Errorf("%w: %s is not in %s (the server refused it by id, and no branch or tag contains it)", ErrCommitNotFound, commit, r.URL)
	}
	return m.git(ctx, dir, m.opts.LocalTimeout, "update-ref", pin, commit)
}

// isUnservedID recognises a server (or client) refusing a want by object id:
// the object is missing, unreachable, or unadvertised under protocol v0.
func isUnservedID(err error) bool {
	s := stderrOf(err)
	for _, msg := range []string{
		"not our ref",
		"request for unadvertised object",
		"couldn't find remote ref",
		"no such remote ref",
	} {
		if strings.Contains(s, msg) {
			return true
		}
	}
	return false
}

// isAuthFailure recognises missing or rejected credentials and SSH host key
// mismatches. git runs in the C locale, so its messages are stable.
func isAuthFailure(err error) bool {
	s := stderrOf(err)
	for _, msg := range []string{
		"Authentication failed",
		"could not read Username",
		"could not read Password",
		"terminal prompts disabled",
		"The requested URL returned error: 401",
		"The requested URL returned error: 403",
		"Permission denied (publickey",
		"Host key verification failed",
	} {
		if strings.Contains(s, msg) {
			return true
		}
	}
	return false
}
