package agent

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// RouteProto marks the routes the agent makes (rtnetlink protocol number),
// so that it only ever removes its own.
const RouteProto = netlink.RouteProtocol(201)

// Peer is another node: its address of each family and its pod CIDRs.
type Peer struct {
	Name string
	// IPv4 and IPv6 are the node's first InternalIP of each family; nil
	// when it has none. A dual-stack node lists one of each (kubelet
	// reports them as separate InternalIPs), and each pod CIDR is routed
	// via the address of its own family.
	IPv4, IPv6 net.IP
	PodCIDRs   []*net.IPNet
}

// Gateway is the peer's address of cidr's family, or nil when it has none.
func (p Peer) Gateway(cidr *net.IPNet) net.IP {
	if cidr.IP.To4() != nil {
		return p.IPv4
	}
	return p.IPv6
}

// Peers lists the nodes other than self that have a pod CIDR and an
// InternalIP of that CIDR's family.
func Peers(self string, nodes []*corev1.Node) []Peer {
	var out []Peer
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		p := Peer{Name: n.Name}
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			ip := net.ParseIP(a.Address)
			switch {
			case ip == nil:
			case ip.To4() != nil:
				if p.IPv4 == nil {
					p.IPv4 = ip.To4()
				}
			case p.IPv6 == nil:
				p.IPv6 = ip
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		routable := false
		for _, c := range cidrs {
			if _, cidr, err := net.ParseCIDR(c); err == nil {
				p.PodCIDRs = append(p.PodCIDRs, cidr)
				routable = routable || p.Gateway(cidr) != nil
			}
		}
		if routable {
			out = append(out, p)
		}
	}
	return out
}

// SyncRoutes makes the agent's routes exactly: each peer's pod CIDRs via
// the peer's address of the CIDR's family, when that address is directly
// reachable (on a connected subnet, no gateway in between). It removes
// routes of its own that no longer fit and leaves every other route alone.
func SyncRoutes(h nsutil.Handle, peers []Peer) (added, removed int, err error) {
	want := map[string]*netlink.Route{}
	for _, p := range peers {
		for _, cidr := range p.PodCIDRs {
			gw := p.Gateway(cidr)
			if gw == nil {
				continue
			}
			routes, rerr := h.RouteGet(gw)
			if rerr != nil || len(routes) == 0 || routes[0].Gw != nil {
				continue // not directly reachable: host-gw cannot route to it
			}
			want[cidr.String()] = &netlink.Route{Dst: cidr, Gw: gw, LinkIndex: routes[0].LinkIndex, Protocol: RouteProto}
		}
	}
	have, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, 0, fmt.Errorf("list routes: %w", err)
	}
	var errs []error
	for _, r := range have {
		w, ok := want[r.Dst.String()]
		if ok && w.Gw.Equal(r.Gw) && w.LinkIndex == r.LinkIndex {
			delete(want, r.Dst.String()) // already right
			continue
		}
		if err := h.RouteDel(&r); err != nil && !nsutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", r.Dst, err))
			continue
		}
		removed++
	}
	for _, r := range want {
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", r.Dst, r.Gw, err))
			continue
		}
		added++
	}
	return added, removed, errors.Join(errs...)
}
