package plugin

import (
	"net"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// MACArgs are the places a runtime may ask for the container interface's
// MAC address: runtimeConfig.mac (capability "mac"), args.cni.mac, and
// CNI_ARGS MAC=. Plugin configs embed it.
type MACArgs struct {
	RuntimeConfig struct {
		Mac string `json:"mac,omitempty"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni"`
	} `json:"args"`
}

// MAC returns the requested MAC (nil for none), runtimeConfig first.
func (m MACArgs) MAC(cniArgs string) (net.HardwareAddr, error) {
	s := m.RuntimeConfig.Mac
	key := `"runtimeConfig.mac"`
	if s == "" {
		s, key = m.Args.CNI.Mac, `"args.cni.mac"`
	}
	if s == "" {
		for _, kv := range strings.Split(cniArgs, ";") {
			if k, v, ok := strings.Cut(kv, "="); ok && k == "MAC" {
				s, key = v, "CNI_ARGS MAC"
			}
		}
	}
	if s == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		return nil, ConfigError("%s: %q is not a unicast Ethernet MAC address", key, s)
	}
	return mac, nil
}

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
