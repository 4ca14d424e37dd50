package main

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

type linkLike = netlink.Link

// setupContainer addresses the container end and routes everything
// through the gateway on the host end: gateway/32 on-link, the rest of the
// subnet via the gateway, and the configured routes (a default route per
// family when none are configured). It returns the gateways and routes.
func setupContainer(h nsutil.Handle, link netlink.Link, res *current.Result) ([]net.IP, []*types.Route, error) {
	if lo, err := h.LinkByName("lo"); err == nil {
		if err := netconf.SetUp(h, lo); err != nil {
			return nil, nil, err
		}
	}
	if err := netconf.SetUp(h, link); err != nil {
		return nil, nil, err
	}
	gws := make([]net.IP, len(res.IPs))
	for i, ip := range res.IPs {
		gw, err := netconf.Gateway(ip)
		if err != nil {
			return nil, nil, err
		}
		gws[i] = gw
		// The address keeps its subnet's prefix length (what the result and
		// CHECK report) but makes no prefix route: the subnet is reached
		// through the gateway, like everything else.
		if err := netconf.AddAddr(h, link, &ip.Address, false); err != nil {
			return nil, nil, err
		}
		idx := link.Attrs().Index
		if err := netconf.AddRoute(h, &netlink.Route{LinkIndex: idx, Dst: netconf.HostRoute(gw), Scope: netlink.SCOPE_LINK}); err != nil {
			return nil, nil, err
		}
		subnet := &net.IPNet{IP: ip.Address.IP.Mask(ip.Address.Mask), Mask: ip.Address.Mask}
		if ones, bits := subnet.Mask.Size(); ones < bits {
			if err := netconf.AddRoute(h, &netlink.Route{LinkIndex: idx, Dst: subnet, Gw: gw}); err != nil {
				return nil, nil, err
			}
		}
	}
	routes := res.Routes
	if len(routes) == 0 {
		for _, gw := range uniqueFamilies(gws) {
			dst := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
			if gw.To4() == nil {
				dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
			}
			routes = append(routes, &types.Route{Dst: *dst, GW: gw})
		}
	}
	var out []*types.Route
	for _, r := range routes {
		gw := r.GW
		if gw == nil {
			gw = familyGateway(gws, r.Dst.IP.To4() != nil)
		}
		if gw == nil {
			return nil, nil, plugin.ConfigError(`"ipam.routes": no gateway of the family of %s`, r.Dst.String())
		}
		dst := r.Dst
		if err := netconf.AddRoute(h, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: gw}); err != nil {
			return nil, nil, err
		}
		out = append(out, &types.Route{Dst: r.Dst, GW: gw})
	}
	return gws, out, nil
}

func uniqueFamilies(gws []net.IP) []net.IP {
	var out []net.IP
	if g := familyGateway(gws, true); g != nil {
		out = append(out, g)
	}
	if g := familyGateway(gws, false); g != nil {
		out = append(out, g)
	}
	return out
}

func familyGateway(gws []net.IP, v4 bool) net.IP {
	for _, g := range gws {
		if (g.To4() != nil) == v4 {
			return g
		}
	}
	return nil
}

// setupHost puts each gateway on the host end as a /32 (/128), usable at
// once, and routes each container address to the veth.
func setupHost(h nsutil.Handle, link netlink.Link, res *current.Result, gws []net.IP) error {
	if _, v6 := plugin.Families(res); v6 {
		if err := netconf.DisableDAD(link.Attrs().Name); err != nil {
			return err
		}
	}
	if err := netconf.SetUp(h, link); err != nil {
		return err
	}
	var done []string
	for _, gw := range gws {
		if slices.Contains(done, gw.String()) {
			continue
		}
		done = append(done, gw.String())
		if err := netconf.AddAddr(h, link, netconf.HostRoute(gw), false); err != nil {
			return err
		}
	}
	for _, ip := range res.IPs {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: netconf.HostRoute(ip.Address.IP), Scope: netlink.SCOPE_LINK}
		if err := netconf.AddRoute(h, r); err != nil {
			return err
		}
	}
	return nil
}

// check verifies both sides against the previous result.
func (a *attachment) check(h *plugin.Handles, prev *current.Result) error {
	idx := plugin.FindInterface(prev, a.args.IfName)
	if idx < 0 {
		return fmt.Errorf("prevResult has no interface %s with a sandbox", a.args.IfName)
	}
	cont, err := netconf.CheckLink(h.Cont, a.args.IfName, "container")
	if err != nil {
		return err
	}
	host, err := netconf.CheckLink(h.Host, a.hostVeth, "host")
	if err != nil {
		return err
	}
	var v4, v6 bool
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		gw, err := netconf.Gateway(ip)
		if err != nil {
			return err
		}
		if ip.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
		for _, c := range []error{
			netconf.CheckAddr(h.Cont, cont, &ip.Address, "container"),
			netconf.CheckRoute(h.Cont, cont, netconf.HostRoute(gw), nil, "container"),
			netconf.CheckAddr(h.Host, host, netconf.HostRoute(gw), "host"),
			netconf.CheckRoute(h.Host, host, netconf.HostRoute(ip.Address.IP), nil, "host"),
		} {
			if c != nil {
				return c
			}
		}
	}
	for _, r := range prev.Routes {
		dst := r.Dst
		if err := netconf.CheckRoute(h.Cont, cont, &dst, r.GW, "container"); err != nil {
			return err
		}
	}
	if v4 && !netconf.ForwardingOn(false) {
		return errors.New("host: IPv4 forwarding is off")
	}
	if v6 && !netconf.ForwardingOn(true) {
		return errors.New("host: IPv6 forwarding is off")
	}
	return nil
}
