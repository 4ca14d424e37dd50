package plugin

import (
	"io"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// PrintResult writes res to w converted to cniVersion. A result the version
// cannot express (0.1.0/0.2.0 without any address) is a version error that
// says which versions can.
func PrintResult(w io.Writer, res types.Result, cniVersion string) error {
	out, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return VersionError("cannot express the result as cniVersion %s: %v; use cniVersion 0.3.0 or later", cniVersion, err)
	}
	return out.PrintTo(w)
}

// IfaceIndex returns a pointer to i, for current.IPConfig.Interface.
func IfaceIndex(i int) *int { return &i }

// Extend appends a plugin's interfaces, addresses and routes to the
// previous result of a chain (or starts a new result when prev is nil),
// shifting the interface indexes of ips past prev's interfaces. DNS is the
// plugin's when set, else prev's.
func Extend(prev *current.Result, ifaces []*current.Interface, ips []*current.IPConfig, routes []*types.Route, dns types.DNS) *current.Result {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if prev != nil {
		res.Interfaces = append(res.Interfaces, prev.Interfaces...)
		res.IPs = append(res.IPs, prev.IPs...)
		res.Routes = append(res.Routes, prev.Routes...)
		res.DNS = prev.DNS
	}
	base := len(res.Interfaces)
	res.Interfaces = append(res.Interfaces, ifaces...)
	for _, ip := range ips {
		c := *ip
		if c.Interface != nil {
			c.Interface = IfaceIndex(*c.Interface + base)
		}
		res.IPs = append(res.IPs, &c)
	}
	res.Routes = append(res.Routes, routes...)
	if !dns.IsEmpty() {
		res.DNS = dns
	}
	return res
}

// FindInterface returns the index of the interface named name in res whose
// sandbox is set (the container side), or -1.
func FindInterface(res *current.Result, name string) int {
	for i, iface := range res.Interfaces {
		if iface.Name == name && iface.Sandbox != "" {
			return i
		}
	}
	return -1
}

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
