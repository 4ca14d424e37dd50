package plugin

import (
	"errors"
	"log/slog"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// OpenNetns opens CNI_NETNS for ADD or CHECK. Anything that is not another
// network namespace is a code-4 error naming CNI_NETNS and what it found.
func OpenNetns(path string) (*nsutil.NS, error) {
	n, err := nsutil.OpenTarget(path)
	if err != nil {
		return nil, netnsError(err)
	}
	return n, nil
}

// OpenNetnsForDel opens CNI_NETNS for DEL, where a namespace that is gone is
// no error: it returns (nil, nil) when CNI_NETNS is empty, missing, or left
// behind as an unmounted file — and when it is the plugin's own namespace
// (a /proc/<pid>/ns/net whose container is gone and whose pid now belongs
// to a process of the host): nothing of the container can be in it, DEL
// leaves it alone and must not fail for it.
func OpenNetnsForDel(path string) (*nsutil.NS, error) {
	if path == "" {
		return nil, nil
	}
	n, err := nsutil.OpenTarget(path)
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, nsutil.ErrNotExist), errors.Is(err, nsutil.ErrNotNS):
		return nil, nil
	case errors.Is(err, nsutil.ErrOwnNS):
		slog.Warn("CNI_NETNS is the plugin's own namespace, not the container's: left alone")
		return nil, nil
	default:
		return nil, netnsError(err)
	}
}

func netnsError(err error) *types.Error {
	if errors.Is(err, nsutil.ErrOwnNS) {
		return EnvError("CNI_NETNS %v: refusing to configure the namespace the plugin runs in", err)
	}
	return EnvError("CNI_NETNS %v", err)
}

// Handles are netlink handles in the host (where the plugin runs) and in a
// container's namespace: with them no work needs a namespace switch.
type Handles struct{ Host, Cont nsutil.Handle }

// Target is the container side of an ADD or CHECK: its namespace and
// netlink handles in it and in the host.
type Target struct {
	NS *nsutil.NS
	Handles
}

// OpenTarget opens CNI_NETNS (a code-4 error unless it is another network
// namespace) and the handles. Close it when done.
func OpenTarget(netns string) (*Target, error) {
	n, err := OpenNetns(netns)
	if err != nil {
		return nil, err
	}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		n.Close()
		return nil, err
	}
	cont, err := n.Handle()
	if err != nil {
		host.Close()
		n.Close()
		return nil, err
	}
	return &Target{NS: n, Handles: Handles{host, cont}}, nil
}

// Close closes the handles and the namespace.
func (t *Target) Close() {
	t.Host.Close()
	t.Cont.Close()
	t.NS.Close()
}
