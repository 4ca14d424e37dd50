package netconf

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
)

// The CHECK validators: each returns an error naming what is missing.

// CheckLink finds a link by name and checks it is up.
func CheckLink(h Handle, name, where string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: interface %s: %w", where, name, err)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		return nil, fmt.Errorf("%s: interface %s is down", where, name)
	}
	return l, nil
}

// CheckAddr checks that link has ip (address and prefix length).
func CheckAddr(h Handle, link netlink.Link, ip *net.IPNet, where string) error {
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("%s: list addresses of %s: %w", where, link.Attrs().Name, err)
	}
	for _, a := range addrs {
		if a.IP.Equal(ip.IP) && a.Mask.String() == ip.Mask.String() {
			return nil
		}
	}
	return fmt.Errorf("%s: %s lacks address %s", where, link.Attrs().Name, ip)
}

// CheckRoute checks that a route to dst (nil: default) via gw (nil: none)
// exists on link in the main table, on its own or as one next hop of a
// multipath route (an IPv6 route another network's interface gives too;
// see AddRoutes).
func CheckRoute(h Handle, link netlink.Link, dst *net.IPNet, gw net.IP, where string) error {
	return checkRoute(h, link, &netlink.Route{Dst: dst, Gw: gw}, where)
}

// CheckResultRoute checks a route of a result as AddRoutes installed it:
// in its table, with its priority when it gives one.
func CheckResultRoute(h Handle, link netlink.Link, r *types.Route, where string) error {
	return checkRoute(h, link, KernelRoute(link, r), where)
}

func checkRoute(h Handle, link netlink.Link, want *netlink.Route, where string) error {
	dst, gw := want.Dst, want.Gw
	family := netlink.FAMILY_V4
	if (dst != nil && dst.IP.To4() == nil) || (dst == nil && gw != nil && gw.To4() == nil) {
		family = netlink.FAMILY_V6
	}
	list := func(oif int) ([]netlink.Route, error) {
		filter, mask := &netlink.Route{LinkIndex: oif, Table: want.Table}, uint64(0)
		if oif != 0 {
			mask |= netlink.RT_FILTER_OIF
		}
		if want.Table != 0 {
			mask |= netlink.RT_FILTER_TABLE
		}
		return h.RouteListFiltered(family, filter, mask)
	}
	matches := func(r netlink.Route, hopGw net.IP) bool {
		return sameDst(r.Dst, dst) && (gw == nil || hopGw.Equal(gw)) && (want.Priority == 0 || r.Priority == want.Priority)
	}
	routes, err := list(link.Attrs().Index)
	if err != nil {
		return fmt.Errorf("%s: list routes of %s: %w", where, link.Attrs().Name, err)
	}
	for _, r := range routes {
		if matches(r, r.Gw) {
			return nil
		}
	}
	if family == netlink.FAMILY_V6 { // a multipath route names no link of its own: not in the list above
		if all, err := list(0); err == nil {
			for _, r := range all {
				for _, hop := range r.MultiPath {
					if hop.LinkIndex == link.Attrs().Index && matches(r, hop.Gw) {
						return nil
					}
				}
			}
		}
	}
	desc := describeRoute(dst, gw)
	if gw == nil {
		desc = dstString(dst)
	}
	if want.Table != 0 {
		desc += fmt.Sprintf(" in table %d", want.Table)
	}
	if want.Priority != 0 {
		desc += fmt.Sprintf(" with metric %d", want.Priority)
	}
	return fmt.Errorf("%s: no route to %s on %s", where, desc, link.Attrs().Name)
}

// CheckPointToPoint checks what PointToPoint and PointToPointHost made for
// ips with their gateways gws: the container's on-link route to each
// gateway, the gateway on the host end, the host route to each address.
func CheckPointToPoint(host, cont Handle, hostLink, contLink netlink.Link, ips []*current.IPConfig, gws []net.IP) error {
	for i, ip := range ips {
		for _, err := range []error{
			CheckRoute(cont, contLink, HostRoute(gws[i]), nil, "container"),
			CheckAddr(host, hostLink, HostRoute(gws[i]), "host"),
			CheckRoute(host, hostLink, HostRoute(ip.Address.IP), nil, "host"),
		} {
			if err != nil {
				return err
			}
		}
	}
	return nil
}

func sameDst(a, b *net.IPNet) bool {
	isDefault := func(n *net.IPNet) bool {
		if n == nil {
			return true
		}
		ones, _ := n.Mask.Size()
		return ones == 0
	}
	if isDefault(a) || isDefault(b) {
		return isDefault(a) && isDefault(b)
	}
	return a.IP.Equal(b.IP) && a.Mask.String() == b.Mask.String()
}

func dstString(n *net.IPNet) string {
	if n == nil {
		return "default"
	}
	return n.String()
}
