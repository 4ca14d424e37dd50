package plugin

import (
	"net/netip"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// OwnAddresses is res with only the addresses of interface idx: a plugin
// late in a chain checks what it made, not what earlier plugins did.
func OwnAddresses(res *current.Result, idx int) *current.Result {
	out := *res
	out.IPs = nil
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface == idx {
			out.IPs = append(out.IPs, ip)
		}
	}
	return &out
}

// Subnets are the networks of a result's addresses.
func Subnets(res *current.Result) []netip.Prefix {
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

// Families says which address families a result uses.
func Families(res *current.Result) (v4, v6 bool) {
	for _, ip := range res.IPs {
		if ip.Address.IP.To4() != nil {
			v4 = true
		} else {
			v6 = true
		}
	}
	return v4, v6
}

// Handles are netlink handles in the host (where the plugin runs) and in a
// container's namespace: with them no work needs a namespace switch.
type Handles struct{ Host, Cont nsutil.Handle }

// OpenHandles opens both. Close them when done.
func OpenHandles(target *nsutil.NS) (*Handles, error) {
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return nil, err
	}
	cont, err := target.Handle()
	if err != nil {
		host.Close()
		return nil, err
	}
	return &Handles{host, cont}, nil
}

// Close closes both handles.
func (h *Handles) Close() { h.Host.Close(); h.Cont.Close() }
