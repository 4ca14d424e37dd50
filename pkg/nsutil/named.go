package nsutil

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Create makes a new, empty network namespace and keeps it alive by
// bind-mounting it on path, as `ip netns add` does under /run/netns. The path
// may be anywhere: tests and the demo keep theirs in a temporary directory.
// The file must not exist yet. Remove undoes it.
func Create(path string) (*NS, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return nil, fmt.Errorf("create netns file: %w", err)
	}
	f.Close()

	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: once it has unshared it is in the new
		// namespace, and a locked thread dies with its goroutine instead of
		// going back to the pool to run other goroutines there.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind-mount netns on %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	n, err := Open(path)
	if err != nil {
		_ = Remove(path)
		return nil, err
	}
	return n, nil
}

// Remove deletes a namespace made by Create: it detaches the bind mount
// (the kernel frees the namespace once nothing else holds it) and removes
// the file. A path that is already gone is not an error.
func Remove(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", path, err))
	}
	return errors.Join(errs...)
}
