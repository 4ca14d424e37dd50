// Command veth-ptp connects a container to the host over a point-to-point
// veth pair: the container's addresses come from IPAM, it reaches its
// gateway (an address on the host end) over the link, and the host routes
// each container address to its veth. With ipMasq, traffic leaving the
// container network is masqueraded by one set of rules per network. A
// drop-in for the reference "ptp" plugin: same keys, same behaviour, faster
// and leak-free.
package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

const pluginName = "veth-ptp"

func main() {
	plugin.Main(plugin.Plugin{
		Name:   pluginName,
		About:  "netns-cni veth-ptp: point-to-point veth, host routes, IP forwarding and masquerade",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	})
}

// Config is the veth-ptp network config: the reference ptp's keys.
type Config struct {
	plugin.NetConf
	plugin.MACArgs
	// IPMasq masquerades traffic from the network to anywhere else.
	IPMasq bool `json:"ipMasq"`
	// IPMasqBackend is "nftables" (the default) or "iptables".
	IPMasqBackend string `json:"ipMasqBackend,omitempty"`
	// MTU of both veth ends; 0 keeps the kernel's default.
	MTU int `json:"mtu,omitempty"`
	// NonMasqueradeCIDRs are destinations reached unmasqueraded, with the
	// containers' own addresses (a cluster's pod CIDR across nodes).
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs,omitempty"`
}

// Validate reports every problem, each naming its key.
func (c *Config) Validate() []error {
	var errs []error
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf(`"mtu": must be 68-65535, got %d`, c.MTU))
	}
	if c.IPMasqBackend != "" && c.IPMasqBackend != nat.NFTables && c.IPMasqBackend != nat.IPTables {
		errs = append(errs, fmt.Errorf(`"ipMasqBackend": must be "nftables" or "iptables", got %q`, c.IPMasqBackend))
	}
	_, cerrs := plugin.NoMasqCIDRs(c.NonMasqueradeCIDRs)
	return append(errs, cerrs...)
}

// attachment is everything a verb needs about one attachment.
type attachment struct {
	conf     *Config
	ipam     *plugin.IPAM
	args     *skel.CmdArgs
	hostVeth string
	masq     plugin.Masq
}

func load(args *skel.CmdArgs) (*attachment, error) {
	conf, err := plugin.Load[Config](args)
	if err != nil {
		return nil, err
	}
	m, err := plugin.LoadIPAM(args)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, plugin.ConfigError(`"ipam": missing; veth-ptp needs addresses, e.g. {"type": "host-local", "subnet": "10.22.0.0/16"}`)
	}
	noMasq, _ := plugin.NoMasqCIDRs(conf.NonMasqueradeCIDRs) // validated by Load
	return &attachment{conf: conf, ipam: m, args: args,
		hostVeth: netconf.HostVethName("vp", args.ContainerID, args.IfName),
		masq:     plugin.Masq{Plugin: pluginName, Network: conf.Name, Backend: conf.IPMasqBackend, NoMasq: noMasq}}, nil
}

func cmdAdd(args *skel.CmdArgs) (types.Result, error) {
	a, err := load(args)
	if err != nil {
		return nil, err
	}
	mac, err := a.conf.MAC(args.Args)
	if err != nil {
		return nil, err
	}
	h, err := plugin.OpenTarget(args.Netns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// Checked before anything is acquired, so an existing attachment stays whole.
	if err := netconf.IfnameFree(h.Host, h.Cont, args.IfName, args.Netns); err != nil {
		return nil, err
	}

	var rb plugin.Rollback
	defer func() { _ = rb.Undo() }()
	// Undone last: whether the network still needs its NAT rules is
	// decided after this ADD's veth and addresses are gone.
	if a.conf.IPMasq {
		if err := rb.Push("nat-prepare", a.masq.RemoveIfUnused); err != nil {
			return nil, err
		}
	}
	ipamRes, release, err := a.ipam.Add(context.Background())
	if err != nil {
		return nil, err
	}
	if err := rb.Push("ipam", release); err != nil {
		return nil, err
	}
	hostLink, contLink, err := netconf.CreateVethReplacing(h.Host, h.Cont, h.NS, netconf.VethSpec{
		HostName: a.hostVeth, ContName: args.IfName, MTU: a.conf.MTU, ContMAC: mac,
		Alias: netconf.Alias(pluginName, a.conf.Name, args.ContainerID, args.IfName),
	})
	if err != nil {
		return nil, err
	}
	if err := rb.Push("veth", func() error { return netconf.DelLink(h.Host, a.hostVeth) }); err != nil {
		return nil, err
	}
	gws, routes, err := setupContainer(h.Cont, contLink, ipamRes)
	if err != nil {
		return nil, err
	}
	if err := rb.Push("container", noop); err != nil {
		return nil, err
	}
	if err := setupHost(h.Host, hostLink, ipamRes, gws); err != nil {
		return nil, err
	}
	if err := rb.Push("host", noop); err != nil {
		return nil, err
	}
	if err := netconf.EnableForwarding(plugin.Families(ipamRes)); err != nil {
		return nil, err
	}
	if err := rb.Push("forwarding", noop); err != nil {
		return nil, err
	}
	if a.conf.IPMasq {
		if err := a.masq.Ensure(ipamRes); err != nil {
			return nil, err
		}
		if err := rb.Push("nat", noop); err != nil {
			return nil, err
		}
	}
	res := a.result(ipamRes, hostLink, contLink, routes)
	rb.Commit()
	return res, nil
}

func noop() error { return nil }

func cmdDel(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	// DEL works from the host side only: the container's namespace may be
	// empty, gone or half torn down. Retiring the host end cuts the link at
	// once; deleting it (which takes the container end, its addresses and
	// the host routes with it) is left to a reaper, see netconf.Retire.
	// Order: addresses, link, then the network's rules if it was the last.
	var errs []error
	errs = append(errs, a.ipam.Del(context.Background()))
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	errs = append(errs, netconf.Retire(host, a.hostVeth))
	if a.conf.IPMasq {
		errs = append(errs, a.masq.RemoveIfUnused())
	}
	return errors.Join(errs...)
}

func cmdCheck(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	prev := a.conf.PrevResult
	if prev == nil {
		return plugin.ConfigError(`"prevResult": missing; CHECK verifies the result of ADD`)
	}
	h, err := plugin.OpenTarget(args.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := a.check(h.Handles, prev); err != nil {
		return err
	}
	// From here on only this plugin's addresses count, not those of
	// interfaces earlier plugins of the chain made.
	prev = plugin.OwnAddresses(prev, plugin.FindInterface(prev, args.IfName))
	if a.conf.IPMasq {
		if err := a.masq.Check(prev); err != nil {
			return err
		}
	}
	return a.ipam.Check(context.Background(), prev)
}

func cmdGC(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	_, err = plugin.CollectLinks(pluginName, a.conf.Name, a.conf.ValidAttachments)
	errs := []error{err}
	errs = append(errs, a.ipam.GC(context.Background(), a.conf.ValidAttachments))
	if a.conf.IPMasq {
		errs = append(errs, a.masq.RemoveIfUnused())
	}
	return errors.Join(errs...)
}

func cmdStatus(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	if err := a.ipam.Status(context.Background()); err != nil {
		return err
	}
	if a.conf.IPMasq {
		return a.masq.Available()
	}
	return nil
}

// result is the complete, chainable result: host veth, container
// interface with its sandbox, addresses indexed to it, routes, DNS.
func (a *attachment) result(ipamRes *current.Result, hostLink, contLink linkLike, routes []*types.Route) *current.Result {
	ifaces := []*current.Interface{
		{Name: hostLink.Attrs().Name, Mac: hostLink.Attrs().HardwareAddr.String()},
		{Name: contLink.Attrs().Name, Mac: contLink.Attrs().HardwareAddr.String(), Sandbox: a.args.Netns},
	}
	ips := make([]*current.IPConfig, len(ipamRes.IPs))
	for i, ip := range ipamRes.IPs {
		c := *ip
		c.Interface = plugin.IfaceIndex(1)
		ips[i] = &c
	}
	dns := ipamRes.DNS
	if !a.conf.DNS.IsEmpty() {
		dns = a.conf.DNS
	}
	return plugin.Extend(a.conf.PrevResult, ifaces, ips, routes, dns)
}
