package plugin

import (
	"errors"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/netconf"
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

// Target is the container side of an ADD or CHECK: its namespace and
// netlink handles in it and in the host.
type Target struct {
	NS *nsutil.NS
	*Handles
}

// OpenTarget opens CNI_NETNS (a code-4 error unless it is another network
// namespace) and the handles. Close it when done.
func OpenTarget(netns string) (*Target, error) {
	n, err := OpenNetns(netns)
	if err != nil {
		return nil, err
	}
	h, err := OpenHandles(n)
	if err != nil {
		n.Close()
		return nil, err
	}
	return &Target{NS: n, Handles: h}, nil
}

// Close closes the handles and the namespace.
func (t *Target) Close() {
	t.Handles.Close()
	t.NS.Close()
}

// CollectLinks is GC's part for links: it deletes every retired link and
// the host links plugin made for network whose attachment is not in valid,
// and returns the names of the links it kept.
func CollectLinks(plugin, network string, valid []types.GCAttachment) (map[string]bool, error) {
	keep := map[[2]string]bool{}
	for _, v := range valid {
		keep[[2]string{v.ContainerID, v.IfName}] = true
	}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	errs := []error{netconf.ReapRetired(host)}
	links, err := netconf.Attachments(host, plugin, network)
	errs = append(errs, err)
	kept := map[string]bool{}
	for att, l := range links {
		if keep[[2]string{att.ContainerID, att.IfName}] {
			kept[l.Attrs().Name] = true
			continue
		}
		errs = append(errs, netconf.DelLink(host, l.Attrs().Name))
	}
	return kept, errors.Join(errs...)
}
