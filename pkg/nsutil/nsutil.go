// Package nsutil is the only package in netns-cni that switches network
// namespaces. It opens a namespace by path and proves it really is a network
// namespace, runs functions inside it with the thread discipline of the CNI
// library's ns package, hands out netlink handles bound to it (so most work
// never switches a thread at all), and refuses to act on the caller's own
// namespace: the reference loopback plugin once took down the host's lo when
// handed a recycled /proc/<pid>/ns/net.
package nsutil

import (
	"errors"
	"fmt"
	"os"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Sentinel errors, for errors.Is. Every error Open returns for a bad path
// wraps exactly one of them inside a *PathError.
var (
	// ErrNotExist: nothing exists at the path.
	ErrNotExist = errors.New("no such file")
	// ErrNotNS: something exists at the path, but it is not a network
	// namespace (a regular file, a directory, a namespace of another kind).
	ErrNotNS = errors.New("not a network namespace")
	// ErrOwnNS: the path is the namespace the caller itself runs in.
	ErrOwnNS = errors.New("is the plugin's own network namespace")
)

// PathError records a namespace path that could not be used and why.
type PathError struct {
	Path string
	// What the path turned out to be, e.g. "a directory"; empty when unknown.
	What string
	Err  error
}

func (e *PathError) Error() string {
	if e.What != "" {
		return fmt.Sprintf("%s: %s, %v", e.Path, e.What, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

// NS is an open network namespace. Close it when done.
type NS struct {
	ns   ns.NetNS
	path string
}

// Open opens the network namespace at path. It fails with a *PathError
// wrapping ErrNotExist or ErrNotNS when the path is missing or is anything
// other than a network namespace.
func Open(path string) (*NS, error) {
	if path == "" {
		return nil, &PathError{Path: `""`, Err: ErrNotExist}
	}
	if err := check(path); err != nil {
		return nil, err
	}
	n, err := ns.GetNS(path)
	if err != nil {
		return nil, &PathError{Path: path, Err: err}
	}
	return &NS{ns: n, path: path}, nil
}

// check tells a network namespace from everything else at path. The nsfs
// magic alone would accept a mount, pid or user namespace as well, so the
// namespace type is asked of the kernel too.
func check(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return &PathError{Path: path, Err: ErrNotExist}
		}
		return &PathError{Path: path, Err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return &PathError{Path: path, What: "a directory", Err: ErrNotNS}
	case unix.S_IFREG:
		var fs unix.Statfs_t
		if err := unix.Statfs(path, &fs); err == nil && (fs.Type == unix.NSFS_MAGIC || fs.Type == unix.PROC_SUPER_MAGIC) {
			break
		}
		// An unmounted netns file stays behind as an empty regular file.
		return &PathError{Path: path, What: "a regular file", Err: ErrNotNS}
	default:
		return &PathError{Path: path, What: "a special file", Err: ErrNotNS}
	}
	f, err := os.Open(path)
	if err != nil {
		return &PathError{Path: path, Err: err}
	}
	defer f.Close()
	nstype, err := unix.IoctlRetInt(int(f.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return &PathError{Path: path, What: "not a namespace file", Err: ErrNotNS}
	}
	if nstype != unix.CLONE_NEWNET {
		return &PathError{Path: path, What: "a namespace of another kind", Err: ErrNotNS}
	}
	return nil
}

// OpenTarget opens the namespace a plugin is asked to configure. On top of
// Open's checks it refuses the namespace the calling thread runs in, so a
// plugin can never reconfigure the host it runs on by mistake.
func OpenTarget(path string) (*NS, error) {
	n, err := Open(path)
	if err != nil {
		return nil, err
	}
	own, err := n.IsCurrent()
	if err != nil {
		n.Close()
		return nil, err
	}
	if own {
		n.Close()
		return nil, &PathError{Path: path, Err: ErrOwnNS}
	}
	return n, nil
}

// Path is the path the namespace was opened from.
func (n *NS) Path() string { return n.path }

// Fd is the open file descriptor of the namespace.
func (n *NS) Fd() int { return int(n.ns.Fd()) }

// Close releases the namespace file. It does not delete the namespace.
func (n *NS) Close() error { return n.ns.Close() }

// IsCurrent reports whether the calling thread runs in this namespace.
func (n *NS) IsCurrent() (bool, error) {
	var mine, theirs unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &mine); err != nil {
		return false, fmt.Errorf("stat own network namespace: %w", err)
	}
	if err := unix.Fstat(n.Fd(), &theirs); err != nil {
		return false, fmt.Errorf("stat %s: %w", n.path, err)
	}
	return mine.Dev == theirs.Dev && mine.Ino == theirs.Ino, nil
}

// Do runs fn on an OS thread switched into the namespace. The thread is a
// fresh, locked one; it is handed back to the Go scheduler only when
// switching back succeeded, otherwise it dies with the goroutine, so no other
// goroutine can ever run in the wrong namespace. Processes started by fn
// inherit the namespace.
func (n *NS) Do(fn func() error) error {
	return n.ns.Do(func(ns.NetNS) error { return fn() })
}

// Handle is a netlink handle whose sockets live in the namespace. Requests
// on it act on the namespace from any thread, without switching.
type Handle = netlinksafe.Handle

// Handle opens a netlink handle in the namespace. Close it when done. It
// speaks rtnetlink only (links, addresses, routes): one socket, not one per
// netlink family, which is what netlink.NewHandle opens by default.
func (n *NS) Handle() (Handle, error) {
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(n.Fd()), unix.NETLINK_ROUTE)
	if err != nil {
		return Handle{}, fmt.Errorf("open netlink in %s: %w", n.path, err)
	}
	return h, nil
}

// IsNotFound reports whether err says a link, address or route does not
// exist: on DEL, "already gone" counts as done.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) ||
		errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

// CurrentHandle opens a netlink handle in the namespace the process runs
// in: the host, for a plugin.
func CurrentHandle() (Handle, error) {
	h, err := netlinksafe.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return Handle{}, fmt.Errorf("open netlink: %w", err)
	}
	return h, nil
}
