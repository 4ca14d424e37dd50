package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/adopt"
	"github.com/netns-cni/netns-cni/pkg/conntrack"
	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// del is DEL, written once for every veth plugin. It works from the host
// side only: the container's namespace may be empty, gone or half torn
// down. Every step runs; what is gone already counts as done. The order:
//
//  1. The host link, deleted, which takes the container end, its
//     addresses and the host routes with it. First, because an address must not return to the pool while the old
//     port can still answer for it on the same L2 segment. It is looked for
//     under every netns-cni plugin's name for it, so a DEL through a config
//     whose plugin changed finds the port the other plugin made. When no
//     netns-cni link is found, the attachment may be one the reference
//     ptp or bridge made before the node switched to netns-cni: its links
//     and its per-attachment masquerade state go (adoptReference).
//  2. The driver's teardown: what it made beside the link that the network
//     does not own (an empty bridge).
//  3. The attachment's port mappings (found without runtimeConfig too).
//  4. The conntrack entries of the attachment's addresses — the flows it
//     started and those it answered, through its host ports too — before
//     the addresses can be handed out again (pkg/conntrack).
//  5. IPAM, only once the link and the port forwards are gone: when
//     either could not be removed the addresses stay reserved (a forward
//     left would hand its host port to the address's next holder), and
//     the runtime's next DEL tries again.
//  6. Once the link is gone (Network.Detach, under the network's lock):
//     the port's filter rules, then the network's rules (masquerade,
//     FORWARD acceptance, the port mapping skeleton) if no attachment of
//     the network is left — asked of the store after this attachment's
//     addresses left it. Asked before, two DELs of the network's last two
//     attachments at once each saw the other's reservation and both kept
//     the rules.
func (r runner[T, D]) del(args *skel.CmdArgs) error {
	d, a, host, err := r.loadOnHost(args)
	if err != nil {
		return err
	}
	defer host.Close()
	if a.IPAM != nil {
		if err := a.IPAM.pathMissing(); err != nil {
			return err // before anything is removed: the addresses could not be
		}
	}
	lap := newLap()
	port, found, linkErr := deleteHostLink(host, a)
	if !found && linkErr == nil {
		linkErr = adoptReference(host, a)
	}
	lap("link")
	errs := []error{linkErr}
	if t, ok := any(d).(Teardowner); ok {
		errs = append(errs, t.Teardown(a, host))
		lap("driver")
	}
	// Read through the store (which brings its owner index up to date
	// with what other programs, such as the reference host-local, changed)
	// before the network asks the index whether other attachments are left.
	addrs := a.addresses()
	portErr := a.unmapPorts(addrs, port, found)
	errs = append(errs, portErr)
	lap("port-mappings")
	Note("hostLink", port, "found", found, "addresses", addrs)
	if len(addrs) > 0 {
		_, err := conntrack.Forget(addrs)
		errs = append(errs, err)
		lap("conntrack")
	}
	if a.IPAM != nil {
		switch {
		case linkErr != nil:
			errs = append(errs, fmt.Errorf("addresses stay reserved until %s is gone", port))
		case portErr != nil:
			// A forward left would hand the host port's traffic to the
			// address's next holder: the runtime's retry releases both.
			errs = append(errs, errors.New("addresses stay reserved until their port forwards are gone"))
		default:
			errs = append(errs, a.IPAM.Del(context.Background()))
		}
		lap("ipam")
	}
	if linkErr == nil {
		errs = append(errs, a.Network().Detach(port))
		lap("network")
	}
	return errors.Join(errs...)
}

// newLap returns a func that logs, at debug, the time since it was last
// called (or made) as a step of the verb.
func newLap() func(step string) {
	last := time.Now()
	return func(step string) {
		now := time.Now()
		slog.Debug("step done", "step", step, "took", now.Sub(last))
		last = now
	}
}

// deleteHostLink deletes the attachment's host end, under whichever
// netns-cni plugin's name it has, and returns the name (the plugin's own
// when there is none) and whether it found one. The delete waits for the
// kernel's RCU barrier; measured against handing it to a detached reaper
// (what older versions did), it costs a sequential DEL nothing to 8 % and
// gives 8 parallel DELs a third more throughput on two cores.
//
// The name comes from the container ID and ifname alone, so another
// network's attachment of the same container and ifname has it too. Its
// link is found but left alone: the runtime sends the DEL of a network
// whose ADD failed because CNI_IFNAME was taken (code 4) — by the other
// network, whose pod must keep its interface. (Were the other network this
// one renamed under a live pod, the link still goes with the pod's
// namespace, and `netns-cni audit` names the reservation left in the old
// name's store.)
func deleteHostLink(host nsutil.Handle, a *Attachment) (string, bool, error) {
	for i, name := range a.hostVethNames() {
		l, err := host.LinkByName(name)
		if nsutil.IsNotFound(err) {
			continue
		}
		if err != nil {
			return name, true, fmt.Errorf("find %s: %w", name, err)
		}
		alias := l.Attrs().Alias
		if other, ok := otherNetwork(alias, a); ok {
			slog.Warn("host link left in place: it is another network's attachment of this container and ifname",
				"hostLink", name, "ofNetwork", other, "alias", alias)
			return name, true, nil
		}
		// Another plugin's name is taken only by that plugin's link of this
		// very attachment (or a retired one), never by a stranger's link.
		if i > 0 && !ofAttachment(alias, a) {
			continue
		}
		return name, true, netconf.DelLink(host, name)
	}
	return a.HostVeth, false, nil
}

// otherNetwork reports the network (as netconf.Key) of a host link whose
// alias says it is the attachment (containerID, ifname) of a network other
// than a's.
func otherNetwork(alias string, a *Attachment) (string, bool) {
	at, ok := netconf.ParseAlias(alias)
	if !ok || !at.Is(a.Args.ContainerID, a.Args.IfName) || at.Network == netconf.Key(a.Conf.Name) {
		return "", false
	}
	return at.Network, true
}

// adoptReference removes an attachment the reference ptp or bridge made
// (see pkg/adopt), for a DEL that found no netns-cni host link: the
// container interface when the namespace still exists (deleting a veth
// end takes its peer along), the host veth prevResult names when the
// namespace is gone and took it along or not, and the reference's
// per-attachment masquerade chain and rules (ipMasq then or now). Nothing
// is looked for unless something says the network has an attachment there
// to adopt — a prevResult, or a reservation in the store. So a repeated
// DEL of an attachment already removed stays cheap (no iptables execs),
// and the DEL after an ADD that failed before IPAM — because CNI_IFNAME
// was taken, perhaps by another network's attachment — leaves that
// interface alone.
func adoptReference(host nsutil.Handle, a *Attachment) error {
	if a.Conf.PrevResult == nil && len(a.addresses()) == 0 {
		return nil
	}
	// Whatever ipMasq says now: an edited config must not strand the
	// chain an earlier one had the reference make (looking costs netlink
	// reads, no exec, when there is none).
	return errors.Join(removeContainerLink(a), removeReferenceHostLinks(host, a),
		adopt.RemoveMasquerade([]adopt.Attachment{{Network: a.Conf.Name, ContainerID: a.Args.ContainerID, IfName: a.Args.IfName}}))
}

// removeContainerLink deletes CNI_IFNAME in the container's namespace when
// the namespace still exists and the link is a veth: with no netns-cni
// host end found, it is another plugin's end of this attachment.
func removeContainerLink(a *Attachment) error {
	n, err := OpenNetnsForDel(a.Args.Netns)
	if err != nil || n == nil {
		return err
	}
	defer n.Close()
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	l, err := h.LinkByName(a.Args.IfName)
	if nsutil.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("container: find %s: %w", a.Args.IfName, err)
	}
	if _, ok := l.(*netlink.Veth); !ok {
		return nil
	}
	return netconf.DelLink(h, a.Args.IfName)
}

// removeReferenceHostLinks deletes the host veths prevResult lists (those
// without a sandbox) that are still there and are nobody else's: veths
// without a netns-cni alias.
func removeReferenceHostLinks(host nsutil.Handle, a *Attachment) error {
	prev := a.Conf.PrevResult
	if prev == nil {
		return nil
	}
	var errs []error
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" {
			continue
		}
		l, err := host.LinkByName(iface.Name)
		if err != nil {
			continue // gone with its peer's namespace, or never there
		}
		if _, ok := l.(*netlink.Veth); !ok || strings.HasPrefix(l.Attrs().Alias, "netns-cni:") {
			continue
		}
		errs = append(errs, netconf.DelLink(host, iface.Name))
	}
	return errors.Join(errs...)
}

// validAttachments reads GC's list of the attachments to keep, strictly,
// before the lenient rest of the config: a list that does not decode is
// no list at all, and read leniently it would become "keep nothing" —
// the GC would remove every live attachment of the network. So a missing
// key (the spec's GC input requires it; libcni sends it whenever the
// runtime passes GC arguments, null for none), a value that is not a
// list, or an entry without containerID or ifname fails the GC (code 7)
// before anything is touched. The spec's first name for the key,
// "cni.dev/attachments" (libcni sends both), is read when the other is
// absent.
func validAttachments(stdin []byte) ([]types.GCAttachment, error) {
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &keys); err != nil {
		return nil, DecodeError("decode network config: %s", describeJSONError(err))
	}
	raw, ok := keys["cni.dev/valid-attachments"]
	if !ok {
		if raw, ok = keys["cni.dev/attachments"]; !ok {
			return nil, ConfigError(`GC needs "cni.dev/valid-attachments", the attachments to keep ([] or null to keep none); ` +
				`it is missing, and nothing was removed`)
		}
	}
	var valid []types.GCAttachment
	if err := json.Unmarshal(raw, &valid); err != nil {
		return nil, ConfigError(`"cni.dev/valid-attachments": want a list of {"containerID", "ifname"} objects (%s); nothing was removed`,
			describeJSONError(err))
	}
	for i, v := range valid {
		if v.ContainerID == "" || v.IfName == "" {
			return nil, ConfigError(`"cni.dev/valid-attachments[%d]": needs both "containerID" and "ifname"; nothing was removed`, i)
		}
	}
	return valid, nil
}

// ofAttachment reports whether a host link's alias says it is a's, or
// retired by an older version.
func ofAttachment(alias string, a *Attachment) bool {
	at, ok := netconf.ParseAlias(alias)
	return ok && at.Is(a.Args.ContainerID, a.Args.IfName) || alias == netconf.RetiredAlias
}

// gc is GC, in DEL's order: the host links of attachments not in
// cni.dev/valid-attachments (of any netns-cni plugin: the list is the
// network's), the driver's part, the network's state (filter rules of the
// ports gone, the masquerade rules if nothing is left), and the
// reservations of attachments not listed — except those whose link could
// not be deleted, which stay reserved as in DEL. It goes on past failures
// and reports them all.
func (r runner[T, D]) gc(args *skel.CmdArgs) error {
	valid, err := validAttachments(args.StdinData)
	if err != nil {
		return err
	}
	d, a, host, err := r.loadOnHost(args)
	if err != nil {
		return err
	}
	defer host.Close()
	a.Conf.ValidAttachments = valid
	kept, stuck, err := collectLinks(host, a.Conf.Name, a.Conf.ValidAttachments)
	errs := []error{err}
	if t, ok := any(d).(Teardowner); ok {
		errs = append(errs, t.Collect(a, host))
	}
	if kept != nil { // without the list of links, no port's rules are known to be stale
		valid := map[string]bool{}
		for _, v := range a.Conf.ValidAttachments {
			valid[PortOwner(v.ContainerID, v.IfName)] = true
		}
		for id := range stuck {
			valid[id[0]+"/"+id[1]] = true // its link stays, and with it its forwards
		}
		// The flows of the forwards collected go with the addresses'
		// conntrack entries below.
		_, err := a.Network().Collect(kept, func(owner string) bool { return valid[owner] })
		errs = append(errs, err)
		if errors.Is(err, ErrForwardsLeft) {
			// As in DEL: no address is released while a forward to it
			// may be left; the next GC releases both. (Other failures —
			// a MAC check, the network's rules — do not hold them.)
			return errors.Join(append(errs, errors.New("no address released: the port forwards of those to release could not be removed"))...)
		}
	}
	if a.IPAM != nil {
		keep := func(id, ifname string) bool { return stuck[[2]string{netconf.Key(id), ifname}] }
		released, err := a.IPAM.GC(context.Background(), a.Conf.ValidAttachments, keep)
		errs = append(errs, err, collectReference(a, released))
		var addrs []netip.Addr
		for _, as := range released {
			addrs = append(addrs, as...)
		}
		Note("released", len(released), "addresses", addrs)
		_, err = conntrack.Forget(addrs)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// addresses are the attachment's addresses as the store holds them, or,
// when it cannot tell (a delegated IPAM), as prevResult lists them for
// the attachment's interface.
func (a *Attachment) addresses() []netip.Addr {
	if a.IPAM != nil {
		if addrs, ok := a.IPAM.Held(); ok {
			return addrs
		}
	}
	prev := a.Conf.PrevResult
	if prev == nil {
		return nil
	}
	var out []netip.Addr
	for _, ip := range OwnAddresses(prev, FindInterface(prev, a.Args.IfName)).IPs {
		if addr, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, addr.Unmap())
		}
	}
	return out
}

// collectReference is GC's part for attachments the reference plugins
// made: the port forwards a chained reference portmap made and the
// per-attachment masquerade state of those whose reservations GC
// released, and the reference's nftables masquerade rules of the
// network's attachments not listed. (Their links went with their namespaces; GC has
// no namespace to look into.)
func collectReference(a *Attachment, released map[ipam.Owner][]netip.Addr) error {
	var gone, valid []adopt.Attachment
	for o := range released {
		gone = append(gone, adopt.Attachment{Network: a.Conf.Name, ContainerID: o.ID, IfName: o.IfName})
	}
	// Whatever ipMasq says now, as in DEL.
	for _, v := range a.Conf.ValidAttachments {
		valid = append(valid, adopt.Attachment{Network: a.Conf.Name, ContainerID: v.ContainerID, IfName: v.IfName})
	}
	return errors.Join(adopt.RemovePortmap(gone, adopt.PortmapSearch{ExecIfUnsure: true, NFT: true}), adopt.RemoveMasquerade(gone), adopt.CollectNFT(a.Conf.Name, valid))
}

// loadOnHost is loadLenient plus a netlink handle in the host, for DEL and
// GC, which work from the host side only. Close the handle when done.
func (r runner[T, D]) loadOnHost(args *skel.CmdArgs) (D, *Attachment, nsutil.Handle, error) {
	d, a, err := r.loadLenient(args)
	if err != nil {
		return nil, nil, nsutil.Handle{}, err
	}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return nil, nil, nsutil.Handle{}, err
	}
	return d, a, host, nil
}

// collectLinks deletes every retired link and the host links of network
// whose attachment is not in valid. It returns the names of the links
// kept (nil when the links could not be listed) and the attachments
// (container ID as netconf.Key, ifname) whose links could not be deleted.
func collectLinks(host nsutil.Handle, network string, valid []types.GCAttachment) (map[string]bool, map[[2]string]bool, error) {
	keep := map[[2]string]bool{}
	for _, v := range valid {
		keep[[2]string{netconf.Key(v.ContainerID), v.IfName}] = true
	}
	errs := []error{netconf.ReapRetired(host)}
	links, err := netconf.Attachments(host, network)
	if err != nil {
		return nil, nil, errors.Join(append(errs, err)...)
	}
	kept, stuck := map[string]bool{}, map[[2]string]bool{}
	for att, l := range links {
		id := [2]string{att.ContainerID, att.IfName}
		if keep[id] {
			kept[l.Attrs().Name] = true
			continue
		}
		if err := netconf.DelLink(host, l.Attrs().Name); err != nil {
			errs = append(errs, err)
			kept[l.Attrs().Name], stuck[id] = true, true
		}
	}
	return kept, stuck, errors.Join(errs...)
}
