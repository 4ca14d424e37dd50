package plugin

import (
	"errors"
	"log/slog"
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/adopt"
	"github.com/netns-cni/netns-cni/pkg/conntrack"
	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// Port mappings: the portMappings capability, built in (pkg/hostport).
// ADD forwards the ports runtimeConfig.portMappings lists to the
// container's first address of each family; DEL removes the attachment's
// forwards whether or not it is told the mappings again (a hairpin element
// per mapped address says whether there are any, so a DEL of an attachment
// without mappings reads one element and writes nothing); GC removes
// those of attachments not listed; CHECK verifies them. Forwards belong to
// the attachment, named in them as PortOwner; the network keeps the
// rules around them and drops them with its last attachment.

// StepPortMappings forwards the host ports the runtime asked for; undone
// by removing the attachment's forwards.
const StepPortMappings Step = "port-mappings"

// PortOwner names an attachment in its forwards (within nftables' comment
// length whatever the container ID).
func PortOwner(containerID, ifname string) string {
	return netconf.Key(containerID) + "/" + ifname
}

// portSpec is what the attachment asks of pkg/hostport, with entries.
func (a *Attachment) portSpec(entries []hostport.Entry) hostport.Spec {
	s := hostport.Spec{Network: netconf.Key(a.Conf.Name), Owner: PortOwner(a.Args.ContainerID, a.Args.IfName),
		Entries: entries, HostIf: a.HostVeth, Live: a.live()}
	if a.Traits.Bridge != "" {
		s.HostIf, s.Shared = a.Traits.Bridge, true
	}
	return s
}

// live tells pkg/hostport whether a forward in the way is still its
// owner's: whether the store still reserves the forward's address to the
// owner. nil (every forward live) without a host-local store.
func (a *Attachment) live() func(owner string, addr netip.Addr) bool {
	if a.IPAM == nil || a.IPAM.Local == nil {
		return nil
	}
	return func(owner string, addr netip.Addr) bool {
		o, held, err := a.IPAM.Local.Holder(addr)
		if err != nil {
			return true // cannot tell: not ours to take
		}
		return held && PortOwner(o.ID, o.IfName) == owner
	}
}

// plannedPorts are the forwards runtimeConfig asks for to addrs; nil when
// it asks for none.
func (a *Attachment) plannedPorts(addrs []netip.Addr) []hostport.Entry {
	return hostport.Plan(a.Conf.RuntimeConfig.PortMappings, addrs)
}

func resultAddrs(res *current.Result) []netip.Addr {
	var out []netip.Addr
	for _, ip := range res.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// mapPorts is StepPortMappings.
func mapPorts(add *Add) (func() error, error) {
	entries := add.plannedPorts(resultAddrs(add.IPAMResult))
	if len(entries) == 0 {
		return nil, nil // no addresses (L2 mode): nothing to forward to
	}
	n, s := add.Network(), add.portSpec(entries)
	err := n.MapPorts(s)
	if errors.Is(err, lock.ErrBusy) {
		return nil, err
	}
	undo := func() error { _, err := n.UnmapPorts(s, hostport.Pods(entries), false); return err }
	if err != nil {
		return undo, err
	}
	forgetUDPFlows(entries) // made before the forward existed, they would bypass it
	return undo, nil
}

// unmapPorts is DEL's part: the attachment's forwards, whether or not the
// runtime passed the mappings again. (The flows through them go with the
// addresses' conntrack entries, DEL's next step: the container answered
// them.) When the attachment has none of netns-cni's, a reference portmap
// chained before the conflist moved to the built-in mappings may have
// made them: its forwards go too (pkg/adopt), also when the runtime
// passes no mappings (a manual DEL, repair) — looked for over netlink,
// and with iptables only when the runtime passed mappings and netlink
// cannot tell. Its nftables rules, marked with the container ID alone
// (the same container may have the reference's forwards on another
// network), go when they name one of the attachment's addresses, or,
// with none known, when the runtime passed mappings or the reference
// made the attachment (ours false: no netns-cni host link found). port is the host
// link DEL found for the attachment (deleteHostLink), ours whether it is
// netns-cni's.
func (a *Attachment) unmapPorts(addrs []netip.Addr, port string, ours bool) error {
	s := a.portSpec(a.plannedPorts(addrs))
	if port != a.HostVeth {
		// The attachment's link was made by the other plugin (the conflist
		// changed plugin under it): its route_localnet mark, if it had one,
		// is keyed by that link, its own, not by this config's bridge.
		s.HostIf, s.Shared = port, false
	}
	removed, err := a.Network().UnmapPorts(s, addrs, false)
	if len(removed) == 0 {
		at := adopt.Attachment{Network: a.Conf.Name, ContainerID: a.Args.ContainerID, IfName: a.Args.IfName, Addrs: addrs}
		asked := len(a.Conf.RuntimeConfig.PortMappings) > 0
		err = errors.Join(err, adopt.RemovePortmap([]adopt.Attachment{at}, adopt.PortmapSearch{ExecIfUnsure: asked, NFT: asked || !ours || len(addrs) > 0}))
	}
	return err
}

// checkPorts is CHECK's part: the forwards runtimeConfig asks for are the
// attachment's.
func (a *Attachment) checkPorts(own *current.Result) error {
	entries := a.plannedPorts(resultAddrs(own))
	if len(entries) == 0 {
		return nil
	}
	return a.Network().CheckPorts(a.portSpec(entries))
}

// forgetUDPFlows deletes the conntrack entries of UDP flows to the host
// ports of entries, for a new forward: a client that kept sending to the
// port before keeps its entry, and with it the lack of a forward. The
// reference portmap does the same; a failure only delays the change until
// the flow pauses, so it is logged, not returned.
func forgetUDPFlows(entries []hostport.Entry) {
	var ports []conntrack.Port
	for _, e := range entries {
		if e.Proto == unix.IPPROTO_UDP {
			ports = append(ports, conntrack.Port{Proto: e.Proto, Port: e.HostPort, IPv6: e.Pod.Is6()})
		}
	}
	if len(ports) == 0 {
		return
	}
	if _, err := conntrack.ForgetPorts(ports); err != nil {
		slog.Warn("stale UDP flows of host ports stay until they time out", "problem", err.Error())
	}
}
