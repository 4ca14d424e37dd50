package plugin

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/coreos/go-iptables/iptables"

	"github.com/netns-cni/netns-cni/pkg/filter"
	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/iptview"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nftgen"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	nversion "github.com/netns-cni/netns-cni/pkg/version"
)

// Network is the host-wide state of one network that no single attachment
// owns: its masquerade rules, its filter rules (the MAC checks of its
// bridge ports) and the rules around its port mappings. It belongs to the network, not to a plugin: the
// masquerade rules stay while any attachment of the network is left on the
// host, and a port's filter rules go with the port, whichever netns-cni
// plugin made it and whichever plugin's DEL or GC removes it (a node agent
// that switches a network's plugin under live pods leaves attachments of
// both). Which attachments are left is read from the store (or the host
// links' aliases), so no state of its own is kept on disk but a cache:
// the ruleset generation its rules were last found in place at (inPlace).
// Every change runs under the network's lock (pkg/lock).
type Network struct {
	Name string
	// Masquerade is ipMasq; Backend is ipMasqBackend ("" for the default).
	Masquerade bool
	Backend    string
	// NoMasq are destinations reached unmasqueraded ("nonMasqueradeCIDRs").
	NoMasq []netip.Prefix
	// ForwardAccept: the filter FORWARD chain accepts the network's
	// traffic (forwardAccept, on a network the host routes).
	ForwardAccept bool
	// HostPorts: the network may forward host ports (the portMappings
	// capability, or mappings given), so its forwards and the rules around
	// them go with its last attachment.
	HostPorts bool
	// others, when set, tells from the network's store whether an
	// attachment other than the caller's holds addresses: a read of one
	// small directory, where listing the host's links costs ~30 ms at
	// 1,000 pods. Without it (no host-local store) the links are listed.
	others func() (bool, error)
	// stampDir, when set, keeps what the ensure steps found in place, at
	// which ruleset generation (see inPlace).
	stampDir string
}

// key names the network in kernel objects (see netconf.Key).
func (n *Network) key() string { return netconf.Key(n.Name) }

func (n *Network) spec(res *current.Result) nat.Spec {
	return nat.Spec{Network: n.key(), Subnets: Subnets(res), NoMasq: n.NoMasq}
}

// locked runs fn under the network's lock, which keeps one process's "was
// that the network's last attachment?" and the removal that follows from
// interleaving with another's ADD.
func (n *Network) locked(fn func() error) error {
	unlock, err := lock.Network(n.Name)
	if err != nil {
		return fmt.Errorf("network %s: %w", n.Name, err)
	}
	defer unlock()
	return fn()
}

// EnsureMasquerade makes the rules cover the subnets of res (usually they
// already do: one check, nothing written).
func (n *Network) EnsureMasquerade(res *current.Result) error {
	backend, err := nat.New(n.Backend)
	if err != nil {
		return err
	}
	spec := n.spec(res)
	return n.locked(func() error {
		return wrap("masquerade", n.inPlace("masquerade", fmt.Sprintf("%s %+v", n.Backend, spec), func() error { return backend.Ensure(spec) }))
	})
}

// inPlace runs ensure (a read of the rules, writing what is missing)
// unless the rules of kind for spec were found in place at the ruleset
// generation the host is at now: no change of any rule since, so none of
// ours went. Either way they are in place when it returns. It saves ADD
// the read-back (~1–2 ms each for masquerade and FORWARD acceptance) on
// a host whose rules did not change since the last ADD, and costs a
// generation read when they did. Without a store to keep the stamp in,
// or with iptables-legacy tables on the host, ensure always runs.
func (n *Network) inPlace(kind, spec string, ensure func() error) error {
	if n.stampDir == "" {
		return ensure()
	}
	file := filepath.Join(n.stampDir, "in-place-"+kind)
	// The binary's version is part of what the stamp vouches for: another
	// version's checks may be weaker (v0.3.0 took a masquerade chain with
	// a foreign accept before its rule for one in place, and its stamp
	// kept this version's ADD from rewriting it). After an upgrade or a
	// downgrade, each network's next ADD reads back once.
	want := fmt.Sprintf("%x", sha256.Sum256([]byte(nversion.Version+"\x00"+spec)))
	now := nftgen.Stamp()
	if now != "" {
		if b, err := os.ReadFile(file); err == nil && string(b) == now+" "+want {
			return nil
		}
	}
	if err := ensure(); err != nil {
		_ = os.Remove(file)
		return err
	}
	// The generation read before ensure, not after: a change between the
	// read-back and now (someone flushing the ruleset) must not be
	// stamped as "in place". When ensure itself wrote, the next ADD reads
	// back once more, writes nothing, and stamps.
	if now != "" {
		_ = os.WriteFile(file, []byte(now+" "+want), 0o600) // a stamp not written only costs the next ADD a read
	}
	return nil
}

// AddSpoofCheck drops the frames port sends with a source MAC not mac.
func (n *Network) AddSpoofCheck(port string, mac net.HardwareAddr) error {
	return n.locked(func() error { return filter.AddSpoofCheck(n.key(), port, mac) })
}

// RemoveSpoofCheck removes port's MAC check; none is fine.
func (n *Network) RemoveSpoofCheck(port string) error {
	return n.locked(func() error { return filter.RemoveSpoofCheck(n.key(), port) })
}

// EnsureForwardAccept makes the filter FORWARD chain accept the traffic
// of the subnets of res (pkg/filter); usually a netlink read finds the
// rules in place.
func (n *Network) EnsureForwardAccept(res *current.Result) error {
	spec := filter.ForwardSpec{Network: n.key(), Subnets: Subnets(res)}
	return n.locked(func() error {
		return wrap("forward accept", n.inPlace("forward", fmt.Sprintf("%+v %s", spec, filter.Tools()), func() error { return filter.EnsureForward(spec) }))
	})
}

// CheckForwardAccept reports the accept rules for res's subnets missing.
func (n *Network) CheckForwardAccept(res *current.Result) error {
	return filter.CheckForward(filter.ForwardSpec{Network: n.key(), Subnets: Subnets(res)})
}

// portBackends are the hostport backends an attachment's forwards may be
// in, for removal, the configured one first. An operator may have
// switched ipMasqBackend under live pods; a forward left in the other
// backend would send the host port to an address the next pod gets. So
// the other is looked in too — on DEL (all false) only where that costs
// no exec: always for nftables (netlink), for iptables when its binary is
// iptables-nft (its rules read over netlink), not iptables-legacy. GC
// and repair (all true) look in both whatever it costs.
func (n *Network) portBackends(all bool) []hostport.Backend {
	kinds := []string{hostport.NFTables, hostport.IPTables}
	if n.Backend == hostport.IPTables {
		kinds[0], kinds[1] = kinds[1], kinds[0]
	}
	if !all && kinds[1] == hostport.IPTables && (legacyBinary(iptables.ProtocolIPv4) || legacyBinary(iptables.ProtocolIPv6)) {
		kinds = kinds[:1]
	}
	var out []hostport.Backend
	for _, k := range kinds {
		b, _ := hostport.New(k)
		out = append(out, b)
	}
	return out
}

// MapPorts puts an attachment's forwards in place.
func (n *Network) MapPorts(s hostport.Spec) error {
	b, err := hostport.New(n.Backend)
	if err != nil {
		return err
	}
	return n.locked(func() error {
		unlock, err := lock.HostPorts()
		if err != nil {
			return err
		}
		defer unlock()
		leftovers, err := hostport.Conflict(s, n.Backend)
		if err != nil {
			return wrap("port mappings", err)
		}
		done := map[[2]string]bool{} // backend, owner
		for _, l := range leftovers {
			// All the owner has there, once (a forward per family is a
			// leftover each): its hairpin and loopback marks too.
			if done[[2]string{l.Kind, l.Owner}] {
				continue
			}
			done[[2]string{l.Kind, l.Owner}] = true
			other, _ := hostport.New(l.Kind)
			if _, err := other.Collect(s.Network, func(owner string) bool { return owner != l.Owner }); err != nil {
				return wrap("port mappings: remove what "+l.Owner+" left in "+l.Kind, err)
			}
		}
		return wrap("port mappings", b.Add(s))
	})
}

// legacyBinary reports an iptables binary of protocol p that is
// iptables-legacy: its rules are only read by exec'ing it.
func legacyBinary(p iptables.Protocol) bool {
	return iptview.Binary(p) != "" && !iptview.NFTBased(p)
}

// UnmapPorts removes the forwards of the attachment s names (of
// s.Entries, or all it has when nil; pods are its addresses) and returns
// them. all: look in the backend the config does not name whatever it
// costs (see portBackends).
func (n *Network) UnmapPorts(s hostport.Spec, pods []netip.Addr, all bool) ([]hostport.Entry, error) {
	var removed []hostport.Entry
	err := n.locked(func() error {
		var errs []error
		for _, b := range n.portBackends(all) {
			r, err := b.Remove(s, pods)
			removed = append(removed, r...)
			errs = append(errs, err)
		}
		return wrap("port mappings", errors.Join(errs...))
	})
	return removed, err
}

// CheckPorts reports the attachment's forwards missing.
func (n *Network) CheckPorts(s hostport.Spec) error {
	b, err := hostport.New(n.Backend)
	if err != nil {
		return err
	}
	return wrap("check port mappings", b.Check(s))
}

// RemoveIfUnused drops the network's rules (masquerade, FORWARD
// acceptance) when no attachment of the network other than the one whose
// host link is self ("" for none) is left on the host.
func (n *Network) RemoveIfUnused(self string) error {
	return n.locked(func() error { return n.removeIfUnused(self) })
}

func (n *Network) removeIfUnused(self string) error {
	if n.others == nil && !n.Masquerade && !n.ForwardAccept && !n.HostPorts {
		// Without a store, whether attachments are left is told by listing
		// the host's links (~30 ms at 1,000 pods): on DEL only when today's
		// config has rules to drop (GC, rare, looks anyway: dropIfUnused).
		return nil
	}
	return n.dropIfUnused(self)
}

// RemoveAnyIfUnused drops every rule of the network, from both backends,
// whatever a config says (n.Masquerade false: see removeMasquerade), when
// no attachment of it is left on the host: an operator's repair.
func (n *Network) RemoveAnyIfUnused() error {
	return n.locked(func() error { return n.dropIfUnused("") })
}

// dropIfUnused is removeIfUnused whatever today's config says.
func (n *Network) dropIfUnused(self string) error {
	unused, err := n.unused(self)
	if err != nil || !unused {
		return err
	}
	// The rules go whatever ipMasq and forwardAccept say now: an edited
	// config must not strand the rules an earlier one made. So do the
	// rules of port mappings, from either backend (each looks before it
	// execs anything).
	errs := []error{wrap("forward accept", filter.RemoveForward(n.key()))}
	for _, kind := range []string{hostport.NFTables, hostport.IPTables} {
		b, _ := hostport.New(kind)
		errs = append(errs, wrap("port mappings", b.Drop(n.key())))
	}
	return errors.Join(append(errs, n.removeMasquerade())...)
}

// removeMasquerade removes the network's masquerade rules from both
// backends, whatever today's config says: ipMasq may have been turned off
// or ipMasqBackend switched since the rules were made. Each backend looks
// before it execs anything.
func (n *Network) removeMasquerade() error {
	var errs []error
	for _, kind := range []string{nat.NFTables, nat.IPTables} {
		b, err := nat.New(kind)
		if err == nil {
			err = b.Remove(n.key())
		}
		errs = append(errs, err)
	}
	return wrap("masquerade", errors.Join(errs...))
}

// Detach is DEL's last part, once port (the attachment's host link) is
// gone and its addresses released: port's filter rules, then the
// network's rules if no attachment is left.
func (n *Network) Detach(port string) error {
	return n.locked(func() error {
		return errors.Join(filter.RemoveSpoofCheck(n.key(), port), n.removeIfUnused(""))
	})
}

// Collect is GC's part: the filter rules of every port not in kept, the
// forwards of attachments keep rejects (returned), then the network's
// rules if no attachment is left — told from the host links: the store
// still holds the reservations GC releases after.
func (n *Network) Collect(kept map[string]bool, keep func(owner string) bool) ([]hostport.Entry, error) {
	n.others = nil
	var removed []hostport.Entry
	err := n.locked(func() error {
		errs := []error{filter.RemoveSpoofChecksExcept(n.key(), kept)}
		for _, b := range n.portBackends(true) {
			r, err := b.Collect(n.key(), keep)
			removed = append(removed, r...)
			if err != nil {
				errs = append(errs, fmt.Errorf("port mappings: %w: %w", ErrForwardsLeft, err))
			}
		}
		return errors.Join(append(errs, n.dropIfUnused(""))...)
	})
	if errors.Is(err, lock.ErrBusy) {
		err = fmt.Errorf("%w: %w", ErrForwardsLeft, err)
	}
	return removed, err
}

// ErrForwardsLeft marks a Collect that may have left port forwards of the
// attachments it collects: their addresses must stay reserved.
var ErrForwardsLeft = errors.New("port forwards may be left")

// unused reports whether no attachment of the network but the caller's
// (its host link self) is left on the host.
func (n *Network) unused(self string) (bool, error) {
	if n.others != nil {
		others, err := n.others()
		return !others, err
	}
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

// CheckMasquerade reports rules missing for the subnets of res.
func (n *Network) CheckMasquerade(res *current.Result) error {
	backend, err := nat.New(n.Backend)
	if err != nil {
		return err
	}
	return wrap("check masquerade", backend.Check(n.spec(res)))
}

// Available is STATUS's question: can the NAT backend (masquerade, port
// mappings) work here? Code 50 if not.
func (n *Network) Available() error {
	backend, err := nat.New(n.Backend)
	if err == nil {
		err = backend.Available()
	}
	if err != nil {
		return UnavailableError("ipMasqBackend %q (masquerade, port mappings): %v", n.Backend, err)
	}
	return nil
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
