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

// Peer is another node: its InternalIP and pod CIDRs.
type Peer struct {
	Name     string
	IP       net.IP
	PodCIDRs []*net.IPNet
}

// Peers lists the nodes other than self that have an InternalIP and pod CIDRs.
func Peers(self string, nodes []*corev1.Node) []Peer {
	var out []Peer
	for _, n := range nodes {
		if n.Name == self {
			continue
		}
		var ip net.IP
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP {
				if ip = net.ParseIP(a.Address); ip != nil {
					break
				}
			}
		}
		cidrs := n.Spec.PodCIDRs
		if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
			cidrs = []string{n.Spec.PodCIDR}
		}
		p := Peer{Name: n.Name, IP: ip}
		for _, c := range cidrs {
			if _, cidr, err := net.ParseCIDR(c); err == nil {
				p.PodCIDRs = append(p.PodCIDRs, cidr)
			}
		}
		if ip != nil && len(p.PodCIDRs) > 0 {
			out = append(out, p)
		}
	}
	return out
}

// SyncRoutes makes the agent's routes exactly: each peer's pod CIDRs of its
// InternalIP's family via that InternalIP, when the InternalIP is directly
// reachable (on a connected subnet, no gateway in between). It removes
// routes of its own that no longer fit and leaves every other route alone.
func SyncRoutes(h nsutil.Handle, peers []Peer) (added, removed int, err error) {
	want := map[string]*netlink.Route{}
	for _, p := range peers {
		routes, rerr := h.RouteGet(p.IP)
		if rerr != nil || len(routes) == 0 || routes[0].Gw != nil {
			continue // not directly reachable: host-gw cannot route to it
		}
		for _, cidr := range p.PodCIDRs {
			if (cidr.IP.To4() != nil) != (p.IP.To4() != nil) {
				continue
			}
			want[cidr.String()] = &netlink.Route{Dst: cidr, Gw: p.IP, LinkIndex: routes[0].LinkIndex, Protocol: RouteProto}
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
