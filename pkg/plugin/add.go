package plugin

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// add is ADD, written once for every veth plugin: load, open the target
// namespace, check the interface name is free, then the steps — IPAM, the
// driver's host preparation, the veth pair, the driver's setup,
// forwarding, masquerade, FORWARD acceptance, port mappings — then the
// result and the commit. Any failure
// after the first step undoes every step done, newest first.
func (r runner[T, D]) add(args *skel.CmdArgs) (types.Result, error) {
	d, a, err := r.load(args)
	if err != nil {
		return nil, err
	}
	t, err := OpenTarget(args.Netns)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	// Checked before anything is acquired, so an existing attachment stays whole.
	if err := netconf.IfnameFree(t.Host, t.Cont, args.IfName, args.Netns); err != nil {
		return nil, err
	}

	add := &Add{Attachment: a, Target: t, IPAMResult: &current.Result{CNIVersion: current.ImplementedSpecVersion},
		steps: steps{declared: r.info.steps(), last: time.Now()}}
	defer func() { _ = add.steps.Undo() }()
	if a.IPAM != nil {
		if err := add.Run(StepIPAM, allocate); err != nil {
			return nil, err
		}
	}
	attached := func() {}
	if p, ok := any(d).(Preparer); ok {
		if attached, err = p.Prepare(add); err != nil {
			return nil, err
		}
	}
	err = add.Run(StepVeth, createVeth)
	if attached != nil {
		attached()
	}
	if err != nil {
		return nil, err
	}
	if err := d.Setup(add); err != nil {
		return nil, err
	}
	if a.Traits.Forwarding {
		if err := add.Run(StepForwarding, enableForwarding); err != nil {
			return nil, err
		}
	}
	if a.Conf.IPMasq {
		if err := add.Run(StepMasquerade, masquerade); err != nil {
			return nil, err
		}
	}
	if a.Network().ForwardAccept {
		if err := add.Run(StepForwardAccept, acceptForward); err != nil {
			return nil, err
		}
	}
	if len(a.Conf.RuntimeConfig.PortMappings) > 0 {
		if err := add.Run(StepPortMappings, mapPorts); err != nil {
			return nil, err
		}
	}
	res := add.result()
	add.steps.commit()
	Note("hostLink", add.HostVeth, "addresses", addrStrings(add.IPAMResult))
	return res, nil
}

func addrStrings(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		out = append(out, ip.Address.String())
	}
	return out
}

// allocate reserves the addresses. Its undo, the last to run, releases
// them and then removes the network's rules if no other attachment holds
// addresses: the undos of the rule steps ran while this ADD's own
// reservation was still in the store, so two ADDs failing at once, the
// network's only ones, each saw the other's and kept the rules.
func allocate(add *Add) (func() error, error) {
	res, release, err := add.IPAM.Add(context.Background())
	if err != nil {
		return nil, err
	}
	add.IPAMResult = res
	return func() error {
		return errors.Join(release(), add.Network().RemoveIfUnused(add.HostVeth))
	}, nil
}

func createVeth(add *Add) (func() error, error) {
	t := add.Target
	spec := netconf.VethSpec{HostName: add.HostVeth, ContName: add.Args.IfName, MTU: add.Conf.MTU,
		ContMAC: add.Conf.MAC(), Alias: add.alias()}
	if add.Master != nil {
		spec.MasterIndex = add.Master.Attrs().Index
	}
	host, cont, err := netconf.CreateVethReplacing(t.Host, t.Cont, t.NS, spec)
	if err != nil {
		return nil, err
	}
	add.HostLink, add.ContLink = host, cont
	undo := func() error { return netconf.DelLink(t.Host, add.HostVeth) }
	// Before the host end comes up: a bridge port gets no IPv6 at all; a
	// routed host end ignores router advertisements from the container and
	// has a link-local address usable at once.
	ipv6 := func() error { return netconf.HostIPv6(add.HostVeth, false) }
	if add.Master != nil {
		ipv6 = func() error { return netconf.BridgePortIPv6Off(add.HostVeth) }
	}
	if err := ipv6(); err != nil {
		return undo, err
	}
	return undo, netconf.LoopbackUp(t.Cont)
}

func enableForwarding(add *Add) (func() error, error) {
	return nil, netconf.EnableForwarding(Families(add.IPAMResult))
}

func masquerade(add *Add) (func() error, error) {
	n := add.Network()
	err := n.EnsureMasquerade(add.IPAMResult)
	if errors.Is(err, lock.ErrBusy) {
		return nil, err // nothing written; waiting again to undo nothing helps no one
	}
	// Undone whether Ensure failed part-way (iptables writes rule by rule)
	// or a later step failed: the rules go unless another attachment of
	// the network is left.
	return func() error { return n.RemoveIfUnused(add.HostVeth) }, err
}

func acceptForward(add *Add) (func() error, error) {
	n := add.Network()
	err := n.EnsureForwardAccept(add.IPAMResult)
	if errors.Is(err, lock.ErrBusy) {
		return nil, err
	}
	return func() error { return n.RemoveIfUnused(add.HostVeth) }, err
}

// result is the complete, chainable result: the master (a bridge) when
// there is one, the host veth, the container interface with its sandbox,
// the addresses indexed to it, routes and DNS, appended to prevResult.
func (add *Add) result() *current.Result {
	iface := func(l netlink.Link, sandbox string) *current.Interface {
		return &current.Interface{Name: l.Attrs().Name, Mac: l.Attrs().HardwareAddr.String(), Sandbox: sandbox}
	}
	var ifaces []*current.Interface
	if add.Master != nil {
		ifaces = append(ifaces, iface(add.Master, ""))
	}
	ifaces = append(ifaces, iface(add.HostLink, ""), iface(add.ContLink, add.Args.Netns))
	ips := make([]*current.IPConfig, len(add.IPAMResult.IPs))
	for i, ip := range add.IPAMResult.IPs {
		c := *ip
		c.Interface = IfaceIndex(len(ifaces) - 1)
		ips[i] = &c
	}
	dns := add.IPAMResult.DNS
	if !add.Conf.DNS.IsEmpty() {
		dns = add.Conf.DNS
	}
	return Extend(add.Conf.PrevResult, ifaces, ips, add.Routes, dns)
}
