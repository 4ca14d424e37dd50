package main

import (
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

// setupBridge makes sure the bridge exists and, with isGateway, carries
// each subnet's gateway address (on the VLAN link "<bridge>.<vlan>" for a
// VLAN port). It holds the bridge's lock until the caller has attached its
// port, so that a DEL removing an empty bridge cannot slip in between: the
// caller must call the returned unlock.
func (a *attachment) setupBridge(h nsutil.Handle, res *current.Result, rb *plugin.Rollback) (*netlink.Bridge, func(), error) {
	unlock, err := nat.LockName("bridge/"+a.conf.Bridge, bridgeLockTimeout)
	if errors.Is(err, nat.ErrBusy) {
		return nil, nil, plugin.TryAgainError("bridge %s: %v", a.conf.Bridge, err)
	}
	if err != nil {
		return nil, nil, err
	}
	ok := false
	defer func() {
		if !ok {
			unlock()
		}
	}()
	vlanFiltering := a.conf.Vlan > 0 || len(a.conf.VlanTrunk) > 0
	br, created, err := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: a.conf.Bridge, MTU: a.conf.MTU,
		Promisc: a.conf.PromiscMode, VlanFiltering: vlanFiltering, DisableDAD: !a.conf.EnableDAD})
	if err != nil {
		if created {
			_ = netconf.DelLink(h, a.conf.Bridge)
		}
		return nil, nil, plugin.ConfigError("%v", err)
	}
	if created {
		if err := rb.Push("bridge", func() error { return a.removeBridgeIfEmpty(h) }); err != nil {
			return nil, nil, err
		}
	}
	if a.conf.IsGateway {
		var gwLink netlink.Link = br
		if a.conf.Vlan > 0 {
			if gwLink, err = netconf.EnsureVlanLink(h, br, a.conf.Vlan, !a.conf.EnableDAD); err != nil {
				return nil, nil, err
			}
		}
		for _, ip := range res.IPs {
			gw, err := netconf.Gateway(ip)
			if err != nil {
				return nil, nil, err
			}
			ip.Gateway = gw
			gwNet := &net.IPNet{IP: gw, Mask: ip.Address.Mask}
			added, err := netconf.EnsureGatewayAddr(h, gwLink, gwNet, a.conf.ForceAddress, !a.conf.EnableDAD, `"bridge"`)
			if err != nil {
				return nil, nil, plugin.ConfigError("%v", err)
			}
			if added {
				if err := rb.Push("gateway", func() error { return a.removeGatewayIfUnused(h, gwLink, gwNet) }); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	// Up last, once nothing above can fail; down again on rollback if this
	// ADD brought it up and no container uses it.
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := netconf.SetUp(h, br); err != nil {
			return nil, nil, err
		}
		if err := rb.Push("bridge-up", func() error { return a.downIfUnused(h) }); err != nil {
			return nil, nil, err
		}
	}
	ok = true
	return br, unlock, nil
}

// removeGatewayIfUnused takes a gateway address this ADD put on the
// bridge back off, unless other containers use the bridge.
func (a *attachment) removeGatewayIfUnused(h nsutil.Handle, link netlink.Link, addr *net.IPNet) error {
	br, err := h.LinkByName(a.conf.Bridge)
	if err != nil {
		return nil
	}
	ports, err := netconf.Ports(h, br)
	if err != nil || len(ports) > 0 {
		return err
	}
	if err := h.AddrDel(link, &netlink.Addr{IPNet: addr}); err != nil && !nsutil.IsNotFound(err) {
		return fmt.Errorf("remove gateway %s: %w", addr, err)
	}
	return nil
}

// downIfUnused sets the bridge down again when no container uses it.
func (a *attachment) downIfUnused(h nsutil.Handle) error {
	br, err := h.LinkByName(a.conf.Bridge)
	if err != nil {
		return nil
	}
	ports, err := netconf.Ports(h, br)
	if err != nil || len(ports) > 0 {
		return err
	}
	return h.LinkSetDown(br)
}

// removeBridgeIfEmpty deletes the bridge when netns-cni made it and no
// container is on it, under the bridge's lock.
func (a *attachment) removeBridgeIfEmpty(h nsutil.Handle) error {
	unlock, err := nat.LockName("bridge/"+a.conf.Bridge, bridgeLockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	br, err := h.LinkByName(a.conf.Bridge)
	if err != nil {
		return nil // gone already
	}
	if _, ok := br.(*netlink.Bridge); !ok || br.Attrs().Alias != netconf.BridgeAlias {
		return nil // not ours to remove
	}
	ports, err := netconf.Ports(h, br)
	if err != nil || len(ports) > 0 {
		return err
	}
	return netconf.DelLink(h, a.conf.Bridge)
}

// setupContainer brings the container's interface up, addresses it (with
// its subnet route: the bridge is one L2 segment) and adds the default
// route via the gateway with isDefaultGateway, plus the configured routes.
func (a *attachment) setupContainer(h nsutil.Handle, link netlink.Link, res *current.Result) ([]*types.Route, error) {
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := netconf.SetUp(h, lo); err != nil {
			return nil, err
		}
	}
	if a.conf.DisableContainerInterface {
		return nil, nil
	}
	if err := netconf.SetUp(h, link); err != nil {
		return nil, err
	}
	for _, ip := range res.IPs {
		if err := netconf.AddAddrDAD(h, link, &ip.Address, true, a.conf.EnableDAD); err != nil {
			return nil, err
		}
	}
	routes := res.Routes
	if a.conf.IsDefaultGateway {
		for _, ip := range res.IPs {
			dst := net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			if ip.Address.IP.To4() == nil {
				dst = net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			if !hasRoute(routes, dst) {
				routes = append(routes, &types.Route{Dst: dst, GW: ip.Gateway})
			}
		}
	}
	var out []*types.Route
	for _, r := range routes {
		gw := r.GW
		if gw == nil {
			gw = familyGateway(res, r.Dst.IP.To4() != nil)
		}
		dst := r.Dst
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: gw}
		if err := netconf.AddRoute(h, route); err != nil {
			return nil, err
		}
		out = append(out, &types.Route{Dst: r.Dst, GW: gw})
	}
	return out, nil
}

func hasRoute(routes []*types.Route, dst net.IPNet) bool {
	for _, r := range routes {
		if r.Dst.String() == dst.String() {
			return true
		}
	}
	return false
}

func familyGateway(res *current.Result, v4 bool) net.IP {
	for _, ip := range res.IPs {
		if (ip.Address.IP.To4() != nil) == v4 && ip.Gateway != nil {
			return ip.Gateway
		}
	}
	return nil
}

// result is the complete, chainable result: bridge, host veth, container
// interface with its sandbox, addresses indexed to it, routes, DNS.
func (a *attachment) result(ipamRes *current.Result, br, hostLink, contLink netlink.Link, routes []*types.Route) *current.Result {
	ifaces := []*current.Interface{
		{Name: br.Attrs().Name, Mac: br.Attrs().HardwareAddr.String()},
		{Name: hostLink.Attrs().Name, Mac: hostLink.Attrs().HardwareAddr.String()},
		{Name: contLink.Attrs().Name, Mac: contLink.Attrs().HardwareAddr.String(), Sandbox: a.args.Netns},
	}
	ips := make([]*current.IPConfig, len(ipamRes.IPs))
	for i, ip := range ipamRes.IPs {
		c := *ip
		c.Interface = plugin.IfaceIndex(2)
		ips[i] = &c
	}
	dns := ipamRes.DNS
	if !a.conf.DNS.IsEmpty() {
		dns = a.conf.DNS
	}
	return plugin.Extend(a.conf.PrevResult, ifaces, ips, routes, dns)
}

// check verifies the bridge, the port, the container side, the gateway
// addresses and the MAC check against the previous result.
func (a *attachment) check(h *plugin.Handles, prev, own *current.Result) error {
	if plugin.FindInterface(prev, a.args.IfName) < 0 {
		return fmt.Errorf("prevResult has no interface %s with a sandbox", a.args.IfName)
	}
	br, err := netconf.CheckLink(h.Host, a.conf.Bridge, "host")
	if err != nil {
		return err
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return fmt.Errorf("host: %s is no longer a bridge", a.conf.Bridge)
	}
	port, err := netconf.CheckLink(h.Host, a.hostVeth, "host")
	if err != nil {
		return err
	}
	if port.Attrs().MasterIndex != br.Attrs().Index {
		return fmt.Errorf("host: %s is not a port of %s", a.hostVeth, a.conf.Bridge)
	}
	var cont netlink.Link
	if a.conf.DisableContainerInterface {
		if cont, err = h.Cont.LinkByName(a.args.IfName); err != nil {
			return fmt.Errorf("container: interface %s: %w", a.args.IfName, err)
		}
	} else if cont, err = netconf.CheckLink(h.Cont, a.args.IfName, "container"); err != nil {
		return err
	}
	for _, ip := range own.IPs {
		if err := netconf.CheckAddr(h.Cont, cont, &ip.Address, "container"); err != nil {
			return err
		}
		if a.conf.IsGateway && ip.Gateway != nil {
			gwLink := br
			if a.conf.Vlan > 0 {
				if gwLink, err = h.Host.LinkByName(netconf.VlanLinkName(a.conf.Bridge, a.conf.Vlan)); err != nil {
					return fmt.Errorf("host: vlan link of %s: %w", a.conf.Bridge, err)
				}
			}
			if err := netconf.CheckAddr(h.Host, gwLink, &net.IPNet{IP: ip.Gateway, Mask: ip.Address.Mask}, "host"); err != nil {
				return err
			}
		}
	}
	for _, r := range prev.Routes {
		dst := r.Dst
		if err := netconf.CheckRoute(h.Cont, cont, &dst, r.GW, "container"); err != nil {
			return err
		}
	}
	if a.conf.MacSpoofChk {
		ok, err := nat.HasSpoofCheck(a.conf.Name, a.hostVeth)
		if err != nil {
			return fmt.Errorf("host: mac spoof check of %s: %w", a.hostVeth, err)
		}
		if !ok {
			return fmt.Errorf("host: mac spoof check of %s missing", a.hostVeth)
		}
	}
	return nil
}
