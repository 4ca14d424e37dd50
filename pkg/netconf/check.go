package netconf

import (
	"fmt"
	"net"

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
// exists on link, on its own or as one next hop of a multipath route (an
// IPv6 route another network's interface gives too; see AddRoutes).
func CheckRoute(h Handle, link netlink.Link, dst *net.IPNet, gw net.IP, where string) error {
	family := netlink.FAMILY_V4
	if (dst != nil && dst.IP.To4() == nil) || (dst == nil && gw != nil && gw.To4() == nil) {
		family = netlink.FAMILY_V6
	}
	routes, err := h.RouteList(link, family)
	if err != nil {
		return fmt.Errorf("%s: list routes of %s: %w", where, link.Attrs().Name, err)
	}
	for _, r := range routes {
		if sameDst(r.Dst, dst) && (gw == nil || r.Gw.Equal(gw)) {
			return nil
		}
	}
	if family == netlink.FAMILY_V6 { // a multipath route names no link of its own: not in the list above
		if all, err := h.RouteList(nil, family); err == nil {
			for _, r := range all {
				for _, hop := range r.MultiPath {
					if sameDst(r.Dst, dst) && hop.LinkIndex == link.Attrs().Index && (gw == nil || hop.Gw.Equal(gw)) {
						return nil
					}
				}
			}
		}
	}
	want := describeRoute(dst, gw)
	if gw == nil {
		want = dstString(dst)
	}
	return fmt.Errorf("%s: no route to %s on %s", where, want, link.Attrs().Name)
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
