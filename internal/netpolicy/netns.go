// Network namespaces, created, entered and removed from Go.
//
// A network namespace is a property of an OS thread, not of a process, and
// Go moves goroutines between threads at will. So every function here that
// changes a thread's namespace runs on a goroutine of its own that locks
// itself to its thread first, and puts the thread back into the namespace it
// came from before unlocking it. If that restore fails, the goroutine exits
// still locked, and the Go runtime then terminates the thread instead of
// reusing it: no other goroutine can ever run in a namespace it did not ask
// for.
//
// A namespace lives as long as something refers to it: a process in it, an
// open file descriptor of it, or a bind mount of its nsfs file. A namespace
// that must outlive the call that made it — a sandbox's, which many
// processes will join one after the other — is bind-mounted onto a file (as
// `ip netns add` does under /run/netns), and removing it means unmounting and
// deleting that file. Sockets hold their namespace too: a listener created in
// a namespace keeps it alive until it is closed.

package netpolicy

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// threadNS is this thread's own network namespace, seen from the thread.
const threadNS = "/proc/thread-self/ns/net"

// InNamespace runs fn on an OS thread that has entered the network namespace
// bound at path, and returns fn's error. Sockets fn creates belong to that
// namespace for their whole life, and /proc/sys/net is that namespace's;
// fn must not start goroutines that expect to be there too. An empty path
// runs fn in the calling process's namespace.
func InNamespace(path string, fn func() error) error {
	if path == "" {
		return fn()
	}
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening network namespace: %w", err)
	}
	defer target.Close()
	return onThread(func() error {
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("entering network namespace %s: %w", path, err)
		}
		return fn()
	})
}

// CreateNamespace creates a new network namespace, runs setup on a thread
// inside it (nil for none), and binds the namespace to the file path, which
// must not exist yet; its directory must. On error nothing is left at path.
func CreateNamespace(path string, setup func() error) error {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("creating network namespace file: %w", err)
	}
	f.Close()
	err = onThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unsharing network namespace: %w", err)
		}
		if setup != nil {
			if err := setup(); err != nil {
				return err
			}
		}
		if err := unix.Mount(threadNS, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("binding network namespace to %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		if rmErr := RemoveNamespace(path); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return err
	}
	return nil
}

// RemoveNamespace unmounts the namespace bound at path and deletes the file.
// A path that does not exist, or is not mounted, is not an error. The
// namespace itself goes away once no process, descriptor or socket refers to
// it any more.
func RemoveNamespace(path string) error {
	// MNT_DETACH: a process that has the file open (a runtime starting a
	// container from it) does not make the unmount fail.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmounting network namespace %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing network namespace file: %w", err)
	}
	return nil
}

// onThread runs fn on a locked OS thread of its own and restores the
// thread's network namespace afterwards (see the file comment).
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(threadNS)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer orig.Close()
		err = fn()
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(err, fmt.Errorf("restoring a thread's network namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// nsFD opens the namespace bound at path; "" opens the calling process's.
func nsFD(path string) (*os.File, error) {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening network namespace: %w", err)
	}
	return f, nil
}

// writeSysctl writes value to /proc/sys/<key> (key like
// "net/ipv4/ip_forward") in the namespace of the calling thread.
func writeSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0); err != nil {
		return fmt.Errorf("setting %s: %w", key, err)
	}
	return nil
}

// readSysctl reads /proc/sys/<key> in the namespace of the calling thread.
func readSysctl(key string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", key, err)
	}
	return strings.TrimSpace(string(b)), nil
}
