package e2e

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestMain makes the test process the reaper of the daemons the runtimes
// double-fork (conmon, containerd shims): they are reparented here instead
// of to init, and reaped before the test exits, so none is left as a zombie.
func TestMain(m *testing.M) {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	// The plugins the runtimes start inherit the lock directory.
	unlock, err := nstest.PrivateLocks()
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	_, before := os.Stat(lock.DefaultDir)
	code := m.Run()
	// Every plugin the runtimes started had the private directory: one
	// whose environment lacked it made the host's.
	if _, after := os.Stat(lock.DefaultDir); before != nil && after == nil {
		os.Stderr.WriteString("a plugin run by the tests used the host's lock directory " + lock.DefaultDir + " (its environment lacked " + lock.DirEnv + ")\n")
		code = 1
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err != nil {
			break // no children left
		}
		if pid == 0 {
			time.Sleep(50 * time.Millisecond) // one still exiting
		}
	}
	unlock()
	os.Exit(code)
}
