package main

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/filter"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

// The driver's ADD steps: the first three before the veth pair exists
// (Prepare), the others after it (Setup).
const (
	// stepBridge makes sure the bridge exists; undone by removing a bridge
	// this ADD created if no container is on it.
	stepBridge plugin.Step = "bridge"
	// stepGateway puts each subnet's gateway on the bridge (isGateway);
	// undone by putting back what forceAddress replaced and, if no
	// container is on the bridge, taking off what it added.
	stepGateway plugin.Step = "gateway"
	// stepBridgeUp sets the bridge up; undone by setting it down again if
	// it was down and no container uses it.
	stepBridgeUp plugin.Step = "bridge-up"
	// stepPort sets up the host end as a port: hairpin, isolation, VLANs.
	stepPort plugin.Step = "port"
	// stepMacSpoofChk drops the port's frames with a foreign source MAC.
	stepMacSpoofChk plugin.Step = "macspoofchk"
	// stepContainer addresses the container end and adds its routes.
	stepContainer plugin.Step = "container"
)

// Prepare makes sure the bridge exists, carries the gateways and is up. It
// holds the bridge's lock until the port is attached (the returned func),
// so that a DEL removing an empty bridge cannot slip in between.
func (c *Config) Prepare(add *plugin.Add) (func(), error) {
	unlock, err := lock.Bridge(c.Bridge)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", c.Bridge, err)
	}
	err = add.Run(stepBridge, c.ensureBridge)
	if err == nil && c.IsGateway {
		err = add.Run(stepGateway, c.addGateways)
	}
	if err == nil {
		err = add.Run(stepBridgeUp, c.bridgeUp)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	return unlock, nil
}

func (c *Config) ensureBridge(add *plugin.Add) (func() error, error) {
	h := add.Target.Host
	br, created, err := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: c.Bridge, MTU: c.MTU, Promisc: c.PromiscMode,
		VlanFiltering: c.Vlan > 0 || len(c.VlanTrunk) > 0, DisableDAD: !c.EnableDAD})
	if err != nil {
		if created { // made, but not marked as ours: removed here, by name
			_ = netconf.DelLink(h, c.Bridge)
		}
		return nil, err
	}
	add.Master = br
	if !created {
		return nil, nil
	}
	return c.underLock(func() error { return netconf.RemoveBridgeIfEmpty(h, c.Bridge) }), nil
}

// underLock is fn run under the bridge's lock: the undos of Prepare's
// steps run after the lock was let go, when another ADD may hold it
// between making sure of the bridge and attaching its port; "no port on
// the bridge" is only true when no ADD holds the lock.
func (c *Config) underLock(fn func() error) func() error {
	return func() error {
		unlock, err := lock.Bridge(c.Bridge)
		if err != nil {
			return fmt.Errorf("bridge %s: %w", c.Bridge, err)
		}
		defer unlock()
		return fn()
	}
}

// addGateways puts each subnet's gateway on the bridge (on the VLAN link
// "<bridge>.<vlan>" for a VLAN port) and into the result. Its undo takes
// away what it made and puts back what forceAddress replaced.
func (c *Config) addGateways(add *plugin.Add) (func() error, error) {
	h, link := add.Target.Host, add.Master
	var made netconf.VlanMade
	var ch netconf.GatewayChange
	undo := c.underLock(func() error {
		return errors.Join(netconf.RevertGateways(h, c.Bridge, link, ch),
			netconf.RemoveVlanIfUnused(h, c.Bridge, c.Vlan, made))
	})
	var err error
	if c.Vlan > 0 {
		var vl netlink.Link
		if vl, made, err = netconf.EnsureVlanLink(h, add.Master.(*netlink.Bridge), c.Vlan, !c.EnableDAD); err != nil {
			return undo, err
		}
		link = vl
	}
	ch, err = netconf.EnsureGateways(h, link, add.IPAMResult.IPs, c.ForceAddress, !c.EnableDAD)
	return undo, err
}

func (c *Config) bridgeUp(add *plugin.Add) (func() error, error) {
	h, br := add.Target.Host, add.Master
	if br.Attrs().Flags&net.FlagUp != 0 {
		return nil, nil
	}
	return c.underLock(func() error { return netconf.SetDownIfUnused(h, c.Bridge) }), netconf.SetUp(h, br)
}

// Setup attaches the port, adds its MAC check and configures the container.
func (c *Config) Setup(add *plugin.Add) error {
	if err := add.Run(stepPort, c.setupPort); err != nil {
		return err
	}
	if c.MacSpoofChk {
		if err := add.Run(stepMacSpoofChk, c.addSpoofCheck); err != nil {
			return err
		}
	}
	return add.Run(stepContainer, c.setupContainer)
}

func (c *Config) setupPort(add *plugin.Add) (func() error, error) {
	return nil, netconf.SetupPort(add.Target.Host, add.HostLink, c.port)
}

func (c *Config) addSpoofCheck(add *plugin.Add) (func() error, error) {
	n := add.Network()
	if err := n.AddSpoofCheck(add.HostVeth, add.ContLink.Attrs().HardwareAddr); err != nil {
		return nil, err // one nftables transaction: nothing of it is in place
	}
	return func() error { return n.RemoveSpoofCheck(add.HostVeth) }, nil
}

// setupContainer brings the container's interface up and addresses it
// (with its subnet route: the bridge is one L2 segment), then adds the
// configured routes and, with isDefaultGateway, a default route via the
// gateway.
func (c *Config) setupContainer(add *plugin.Add) (func() error, error) {
	if c.DisableContainerInterface {
		return nil, nil
	}
	h, link, ips := add.Target.Cont, add.ContLink, add.IPAMResult.IPs
	if err := netconf.SetupLink(add.Target.NS, h, link, ips, netconf.AddrOptions{PrefixRoute: true, DAD: c.EnableDAD}); err != nil {
		return nil, err
	}
	routes := add.IPAMResult.Routes
	var gws []net.IP
	for _, ip := range ips {
		gws = append(gws, ip.Gateway)
		if dst := netconf.DefaultDst(ip.Address.IP); c.IsDefaultGateway && !hasRoute(routes, dst) {
			routes = append(routes, &types.Route{Dst: dst, GW: ip.Gateway})
		}
	}
	var err error
	add.Routes, err = netconf.AddRoutes(h, link, routes, gws, true)
	return nil, err
}

// hasRoute reports whether routes has one to dst in the main table (a
// default route of IPAM's in another table leaves isDefaultGateway's).
func hasRoute(routes []*types.Route, dst net.IPNet) bool {
	return slices.ContainsFunc(routes, func(r *types.Route) bool {
		return r.Dst.String() == dst.String() && (r.Table == nil || *r.Table == 0 || *r.Table == unix.RT_TABLE_MAIN)
	})
}

// Check verifies the bridge, the port on it, the gateway addresses and
// the MAC check.
func (c *Config) Check(k *plugin.Checked) error {
	h := k.Target.Host
	br, err := netconf.CheckPort(h, c.Bridge, k.HostLink)
	if err != nil {
		return err
	}
	gwLink := br
	if c.IsGateway && c.Vlan > 0 {
		if gwLink, err = h.LinkByName(netconf.VlanLinkName(c.Bridge, c.Vlan)); err != nil {
			return fmt.Errorf("host: vlan link of %s: %w", c.Bridge, err)
		}
	}
	for _, ip := range k.Own.IPs {
		if c.IsGateway && ip.Gateway != nil {
			if err := netconf.CheckAddr(h, gwLink, &net.IPNet{IP: ip.Gateway, Mask: ip.Address.Mask}, "host"); err != nil {
				return err
			}
		}
	}
	if c.MacSpoofChk && !k.Reference {
		return filter.CheckSpoofCheck(netconf.Key(c.Name), k.HostVeth)
	}
	return nil
}

// Teardown removes the bridge, with removeEmptyBridge, once its last port
// is gone. (The port's MAC check is the network's: pkg/plugin removes it.)
func (c *Config) Teardown(_ *plugin.Attachment, host nsutil.Handle) error {
	if !c.RemoveEmptyBridge {
		return nil
	}
	return c.underLock(func() error { return netconf.RemoveBridgeIfEmpty(host, c.Bridge) })()
}

// Collect is Teardown for GC.
func (c *Config) Collect(a *plugin.Attachment, host nsutil.Handle) error { return c.Teardown(a, host) }
