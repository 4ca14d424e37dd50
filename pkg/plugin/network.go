package plugin

import (
	"fmt"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Network is the host-wide state of one network that no single attachment
// owns: its masquerade rules. It belongs to the network, not to a plugin:
// the rules stay while any attachment of the network is left on the host,
// whichever netns-cni plugin made it (a node agent that switches a
// network's plugin under live pods leaves attachments of both). Which
// attachments are left is read from the host links' aliases, so no state
// of its own is kept on disk.
type Network struct {
	Name string
	// Backend is ipMasqBackend ("" for the default).
	Backend string
	// NoMasq are destinations reached unmasqueraded ("nonMasqueradeCIDRs").
	NoMasq []netip.Prefix
}

// spec names the network by its Key: the rules' table, chain and comments
// have length limits its name may exceed.
func (n *Network) spec(res *current.Result) nat.Spec {
	return nat.Spec{Network: netconf.Key(n.Name), Subnets: Subnets(res), NoMasq: n.NoMasq}
}

// locked runs fn with the backend under the network's lock, which keeps
// one process's "was that the network's last attachment?" and the removal
// that follows from interleaving with another's Ensure.
func (n *Network) locked(fn func(nat.Backend) error) error {
	backend, err := nat.New(n.Backend)
	if err != nil {
		return err
	}
	unlock, err := lock.Network(n.Name)
	if err != nil {
		return fmt.Errorf("masquerade: %w", err)
	}
	defer unlock()
	if err := fn(backend); err != nil {
		return fmt.Errorf("masquerade: %w", err)
	}
	return nil
}

// Ensure makes the rules cover the subnets of res (usually they already
// do: one check, nothing written).
func (n *Network) Ensure(res *current.Result) error {
	return n.locked(func(b nat.Backend) error { return b.Ensure(n.spec(res)) })
}

// RemoveIfUnused drops the rules when no attachment of the network other
// than the one whose host link is self ("" for none) is left on the host.
func (n *Network) RemoveIfUnused(self string) error {
	return n.locked(func(b nat.Backend) error {
		unused, err := n.unused(self)
		if err != nil || !unused {
			return err
		}
		return b.Remove(netconf.Key(n.Name))
	})
}

// unused reports whether no host link but self belongs to the network.
func (n *Network) unused(self string) (bool, error) {
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return false, err
	}
	defer host.Close()
	links, err := netconf.Attachments(host, n.Name)
	if err != nil {
		return false, err
	}
	for _, l := range links {
		if l.Attrs().Name != self {
			return false, nil
		}
	}
	return true, nil
}

// Check reports rules missing for the subnets of res.
func (n *Network) Check(res *current.Result) error {
	backend, err := nat.New(n.Backend)
	if err != nil {
		return err
	}
	if err := backend.Check(n.spec(res)); err != nil {
		return fmt.Errorf("check masquerade: %w", err)
	}
	return nil
}

// Available is STATUS's question: can the backend work here? Code 50 if not.
func (n *Network) Available() error {
	backend, err := nat.New(n.Backend)
	if err == nil {
		err = backend.Available()
	}
	if err != nil {
		return UnavailableError("ipMasq: %v", err)
	}
	return nil
}
