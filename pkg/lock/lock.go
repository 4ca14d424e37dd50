// Package lock serializes netns-cni plugin processes on one host around a
// named resource: a network's host-wide rules, a bridge. A lock is an
// abstract unix socket, which lives in the network namespace the resource
// lives in and vanishes with a killed holder: no file, never stale.
package lock

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy means another process held the lock for the whole timeout.
var ErrBusy = errors.New("lock busy")

// Timeout is how long plugins wait for a lock before they answer "try
// again later" (CNI code 11).
const Timeout = 10 * time.Second

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

// sockAddr is the abstract socket of the lock called name.
func sockAddr(name string) *unix.SockaddrUnix {
	sum := sha256.Sum256([]byte(name))
	return &unix.SockaddrUnix{Name: "@netns-cni/" + hex.EncodeToString(sum[:8])}
}

// Acquire takes the lock called name, waiting at most timeout.
//
// The holder binds the name and listens on it; a waiter connects and
// sleeps until the holder's socket closes (its connection is reset then),
// so it wakes the moment the lock is free instead of polling. A killed
// holder's socket closes with it.
func Acquire(name string, timeout time.Duration) (unlock func(), err error) {
	addr := sockAddr(name)
	deadline := time.Now().Add(timeout)
	var refused time.Time // since when connecting has been refused
	for {
		// Non-blocking: a connect to a holder whose queue is full (a
		// squatter that listens and never accepts) fails instead of
		// blocking without a deadline.
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		err = unix.Bind(fd, addr)
		if err == nil {
			if err := unix.Listen(fd, 4096); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("lock %s: %w", name, err)
			}
			return func() { unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		// Held: wait on a connection to the holder until it goes.
		left := time.Until(deadline)
		if left <= 0 {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: %s, waited %v", ErrBusy, name, timeout)
		}
		err = unix.Connect(fd, addr)
		switch {
		case err == nil:
			refused = time.Time{}
			if err := holderIsPlugin(fd, name, addr.Name); err != nil {
				unix.Close(fd)
				return nil, err
			}
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLHUP}}
			_, _ = unix.Poll(fds, int(left.Milliseconds())+1)
		case errors.Is(err, unix.EAGAIN):
			// The holder's queue is full (many waiters, a small
			// net.core.somaxconn, or a squatter that never accepts): no
			// verdict, wait and look again until the deadline.
			refused = time.Time{}
			time.Sleep(time.Millisecond)
		case refused.IsZero():
			refused = time.Now()
			fallthrough
		case time.Since(refused) < refusedLimit:
			// Between the holder's bind and listen, or just gone: look again.
			time.Sleep(100 * time.Microsecond)
		default:
			// A plugin listens right after it binds, with room for
			// thousands: a socket that refuses connections this long is
			// some other process's.
			unix.Close(fd)
			return nil, fmt.Errorf("%w: %s is held by a socket that takes no connection (%v), which is not a netns-cni plugin; "+
				"find the process that bound %s (ss -xlp) and stop it", ErrBusy, name, err, strings.TrimPrefix(addr.Name, "@"))
		}
		unix.Close(fd)
	}
}

// refusedLimit is how long a lock's socket may refuse connections before
// Acquire takes its holder for a squatter.
const refusedLimit = time.Second

// holderIsPlugin checks who listens on the lock's socket (connected as
// fd): a plugin runs as root (or as the same user, in a user namespace).
// Any process in the namespace can bind an abstract name, so a process
// of another user holding it is squatting on it: waiting would only make
// every ADD and DEL of the resource fail after the timeout, naming
// nobody. It is reported at once, with the process to stop.
func holderIsPlugin(fd int, name, sock string) error {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
		return nil
	}
	return fmt.Errorf("%w: %s is held by pid %d (uid %d), which is not a netns-cni plugin but a process that bound "+
		"its socket %s; stop that process", ErrBusy, name, cred.Pid, cred.Uid, strings.TrimPrefix(sock, "@"))
}
