// Package lock serializes netns-cni plugin processes on one host around a
// named resource: a network's host-wide rules, the host's port mappings, a
// bridge. A lock is an flock on a file in a directory only its owner (root)
// can enter, /run/netns-cni/locks: no unprivileged process can take one,
// so none can deny the host's ADDs and DELs — as any process could when
// the locks were abstract unix sockets, whose names anyone in the network
// namespace may bind. The kernel drops a killed holder's lock; the holder
// removes the file as it lets go, so files do not pile up, and a file left
// by a killed holder is taken by the next.
package lock

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy means another process held the lock for the whole timeout.
var ErrBusy = errors.New("lock busy")

// Timeout is how long plugins wait for a lock before they answer "try
// again later" (CNI code 11).
const Timeout = 10 * time.Second

// DirEnv names the environment variable that moves the lock directory
// (tests keep theirs in a temporary directory). Every process that shares
// resources must see the same value.
const DirEnv = "NETNS_CNI_LOCK_DIR"

// DefaultDir is where the locks live: tmpfs, emptied at boot.
const DefaultDir = "/run/netns-cni/locks"

// Network locks the host-wide state of one network (its masquerade and
// filter rules): the question "was that the network's last attachment?"
// and the removal that follows must not interleave with another ADD.
func Network(network string) (unlock func(), err error) {
	return Acquire("nat/"+network, Timeout)
}

// HostPorts locks the host's port mappings, across networks: a forward
// is checked against every network's before it is added, and two
// networks' ADDs must not both find a host port free. Taken after the
// network's lock, never before it.
func HostPorts() (unlock func(), err error) {
	return Acquire("hostports", Timeout)
}

// Bridge locks a bridge while it is created, attached to or removed.
func Bridge(name string) (unlock func(), err error) {
	return Acquire("bridge/"+name, Timeout)
}

// Retry bounds every wait of a process one of whose waits timed out
// already: the rollback or the rest of a DEL after a busy lock adds a
// second, not another Timeout, to the time the runtime waits for its
// code 11 (whichever lock was busy — these, or the address store's — and
// whichever is asked for next).
const Retry = time.Second

// timedOut is set once a wait of this process timed out.
var timedOut atomic.Bool

// Wait is how long the process may wait for a lock it would wait timeout
// for: Retry, if less, once one of its waits timed out (GaveUp). The
// address store's lock (pkg/ipam) keeps the same account.
func Wait(timeout time.Duration) time.Duration {
	if timedOut.Load() {
		return min(timeout, Retry)
	}
	return timeout
}

// GaveUp records that a wait of this process timed out.
func GaveUp() { timedOut.Store(true) }

// Acquire takes the lock called name, waiting at most Wait(timeout). The
// wait is the kernel's (a blocked flock wakes the moment the holder lets
// go); a wait that times out names the holder's process.
func Acquire(name string, timeout time.Duration) (unlock func(), err error) {
	timeout = Wait(timeout)
	dir, err := lockDir()
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	sum := sha256.Sum256([]byte(name))
	path := filepath.Join(dir, hex.EncodeToString(sum[:8]))

	// The blocked flock runs on its own goroutine so the wait can end at
	// the deadline; one that gets the lock after it lets it go at once.
	var mu sync.Mutex
	gaveUp := false
	got := make(chan error, 1)
	var fd int
	go func() {
		f, err := take(path)
		mu.Lock()
		defer mu.Unlock()
		if gaveUp {
			if err == nil {
				release(f, path)
			}
			return
		}
		fd = f
		got <- err
	}()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case err := <-got:
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
	case <-timer.C:
		mu.Lock()
		select {
		case err := <-got: // taken just now
			mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("lock %s: %w", name, err)
			}
		default:
			gaveUp = true
			mu.Unlock()
			GaveUp()
			return nil, fmt.Errorf("%w: %s, waited %v%s", ErrBusy, name, timeout, holder(path))
		}
	}
	return func() { release(fd, path) }, nil
}

// take opens path's file and flocks it, waiting as long as it takes. A
// file its holder removed while this one waited (or a new one made in its
// place) is not the lock any more: the current one is taken instead.
func take(path string) (int, error) {
	for {
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return -1, err
		}
		for {
			err = unix.Flock(fd, unix.LOCK_EX)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		var held, now unix.Stat_t
		if unix.Fstat(fd, &held) == nil && unix.Stat(path, &now) == nil && held.Ino == now.Ino && held.Dev == now.Dev {
			return fd, nil
		}
		unix.Close(fd)
	}
}

// release removes the lock's file, then lets the lock go: a waiter that
// opened the file before finds it gone and takes the next.
func release(fd int, path string) {
	_ = unix.Unlink(path)
	unix.Close(fd)
}

// Ready reports why no lock could be taken here (the directory cannot be
// made, or is not one only this user may write), or nil: STATUS's
// question, since every ADD that changes host-wide state takes a lock.
func Ready() error {
	_, err := lockDir()
	return err
}

// lockDir is the lock directory, made if missing: DirEnv's, else
// DefaultDir — or, where a plugin may not write /run (a rootless
// runtime's user namespace), XDG_RUNTIME_DIR's netns-cni/locks. It must
// be a directory owned by this user that no one else may write.
func lockDir() (string, error) {
	dir := os.Getenv(DirEnv)
	if dir == "" {
		dir = DefaultDir
		if err := os.MkdirAll(dir, 0o700); err != nil && os.Getenv("XDG_RUNTIME_DIR") != "" &&
			(errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS)) {
			dir = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "netns-cni", "locks")
		}
	}
	if !filepath.IsAbs(dir) {
		// Relative to the runtime's working directory, which differs from
		// runtime to runtime: they would not exclude each other.
		return "", fmt.Errorf("%s: %q is not an absolute path", DirEnv, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return "", err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("lock directory %s is not a directory (a symbolic link, or a file): remove it", dir)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		return "", fmt.Errorf("lock directory %s is not a directory of uid %d that only it may write (mode %o, owner %d): remove it",
			dir, os.Geteuid(), st.Mode&0o7777, st.Uid)
	}
	return dir, nil
}

// holder names the process that holds the flock on path's file, as
// /proc/locks tells it, for an operator to look at: ", held by pid N
// (comm)"; "" when it cannot tell.
func holder(path string) string {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return ""
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return ""
	}
	defer f.Close()
	// The file as /proc/locks names it: device major:minor in hex, inode.
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"
		fs := strings.Fields(sc.Text())
		if len(fs) < 6 || fs[1] != "FLOCK" || fs[5] != id {
			continue
		}
		comm, _ := os.ReadFile("/proc/" + fs[4] + "/comm")
		return fmt.Sprintf(", held by pid %s (%s)", fs[4], strings.TrimSpace(string(comm)))
	}
	return ""
}
