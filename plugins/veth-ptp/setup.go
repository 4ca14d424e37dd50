package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

type linkLike = netlink.Link

// nlHandles are netlink handles in the host and the container namespace.
type nlHandles struct{ host, cont nsutil.Handle }

func handles(target *nsutil.NS) (*nlHandles, error) {
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return nil, err
	}
	cont, err := target.Handle()
	if err != nil {
		host.Close()
		return nil, err
	}
	return &nlHandles{host, cont}, nil
}

func (h *nlHandles) close() { h.host.Close(); h.cont.Close() }

// createVeth makes the pair. A host end left with this attachment's name
// (its container was recreated without a DEL) is replaced; any other
// clash is an error.
func (a *attachment) createVeth(h *nlHandles, target *nsutil.NS, mac net.HardwareAddr) (netlink.Link, netlink.Link, error) {
	spec := netconf.VethSpec{
		HostName: a.hostVeth, ContName: a.args.IfName, MTU: a.conf.MTU, ContMAC: mac,
		Alias: netconf.Alias(pluginName, a.conf.Name, a.args.ContainerID, a.args.IfName),
	}
	hostLink, contLink, err := netconf.CreateVeth(h.host, h.cont, target, spec)
	if errors.Is(err, netconf.ErrExists) {
		if old, lerr := h.host.LinkByName(a.hostVeth); lerr == nil && (old.Attrs().Alias == spec.Alias || old.Attrs().Alias == netconf.RetiredAlias) {
			if derr := h.host.LinkDel(old); derr == nil {
				hostLink, contLink, err = netconf.CreateVeth(h.host, h.cont, target, spec)
			}
		}
	}
	return hostLink, contLink, err
}

// gateway is the address the container routes through: IPAM's gateway,
// else the first address of the subnet.
func gateway(ip *current.IPConfig) (net.IP, error) {
	if ip.Gateway != nil {
		return ip.Gateway, nil
	}
	p, ok := netip.AddrFromSlice(ip.Address.IP.Mask(ip.Address.Mask))
	if !ok {
		return nil, fmt.Errorf("bad address %s", ip.Address.String())
	}
	gw := net.IP(p.Unmap().Next().AsSlice())
	if gw.Equal(ip.Address.IP) {
		return nil, fmt.Errorf("address %s is its own subnet's first address; give IPAM a gateway", ip.Address.String())
	}
	return gw, nil
}

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
		gw, err := gateway(ip)
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
	if _, v6 := families(res); v6 {
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

// subnets are the networks of a result's addresses.
func subnets(res *current.Result) []netip.Prefix {
	var out []netip.Prefix
	for _, ip := range res.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ip.Address.Mask.Size()
		out = append(out, netip.PrefixFrom(a.Unmap(), ones).Masked())
	}
	return out
}

// withNAT runs fn with the network's NAT backend under the network's NAT
// lock, which keeps one plugin's "was that the network's last container?"
// and the removal that follows from interleaving with another's Ensure.
func (a *attachment) withNAT(fn func(nat.Backend) error) error {
	backend, err := nat.New(a.conf.IPMasqBackend)
	if err != nil {
		return err
	}
	unlock, err := nat.Lock(a.conf.Name, lockTimeout)
	if errors.Is(err, nat.ErrBusy) {
		return plugin.TryAgainError("ipMasq: %v", err)
	}
	if err != nil {
		return err
	}
	defer unlock()
	if err := fn(backend); err != nil {
		return fmt.Errorf("ipMasq: %w", err)
	}
	return nil
}

// ensureNAT makes the network's masquerade rules cover this attachment's
// subnets (usually they already do: one check, nothing written).
func (a *attachment) ensureNAT(res *current.Result) error {
	return a.withNAT(func(b nat.Backend) error { return b.Ensure(a.conf.Name, subnets(res)) })
}

// removeNATIfUnused drops the network's rules when no container of it is
// left on this host.
func (a *attachment) removeNATIfUnused() error {
	return a.withNAT(func(b nat.Backend) error {
		host, err := nsutil.CurrentHandle()
		if err != nil {
			return err
		}
		defer host.Close()
		left, err := netconf.Attachments(host, pluginName, a.conf.Name)
		if err != nil || len(left) > 0 {
			return err
		}
		return b.Remove(a.conf.Name)
	})
}

// check verifies both sides against the previous result.
func (a *attachment) check(h *nlHandles, prev *current.Result) error {
	idx := plugin.FindInterface(prev, a.args.IfName)
	if idx < 0 {
		return fmt.Errorf("prevResult has no interface %s with a sandbox", a.args.IfName)
	}
	cont, err := netconf.CheckLink(h.cont, a.args.IfName, "container")
	if err != nil {
		return err
	}
	host, err := netconf.CheckLink(h.host, a.hostVeth, "host")
	if err != nil {
		return err
	}
	var v4, v6 bool
	for _, ip := range prev.IPs {
		if ip.Interface == nil || *ip.Interface != idx {
			continue
		}
		gw, err := gateway(ip)
		if err != nil {
			return err
		}
		if ip.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
		for _, c := range []error{
			netconf.CheckAddr(h.cont, cont, &ip.Address, "container"),
			netconf.CheckRoute(h.cont, cont, netconf.HostRoute(gw), nil, "container"),
			netconf.CheckAddr(h.host, host, netconf.HostRoute(gw), "host"),
			netconf.CheckRoute(h.host, host, netconf.HostRoute(ip.Address.IP), nil, "host"),
		} {
			if c != nil {
				return c
			}
		}
	}
	for _, r := range prev.Routes {
		dst := r.Dst
		if err := netconf.CheckRoute(h.cont, cont, &dst, r.GW, "container"); err != nil {
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
