// Command veth-ptp connects a container to the host over a point-to-point
// veth pair: the container's addresses come from IPAM, it reaches its
// gateway (an address on the host end) over the link, and the host routes
// each container address to its veth. With ipMasq, traffic leaving the
// container network is masqueraded by one set of rules per network. A
// drop-in for the reference "ptp" plugin: same keys, same behaviour,
// faster and leak-free.
//
// pkg/plugin runs the verbs; this package is the config and the driver's
// two steps.
package main

import (
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

func main() { plugin.VethMain[Config](info) }

// The driver's ADD steps, after the veth pair exists. Neither needs an
// undo of its own: deleting the pair takes its addresses and routes along.
const (
	// stepContainer addresses the container end and routes through the gateway.
	stepContainer plugin.Step = "container"
	// stepHost puts the gateways on the host end and routes to the container.
	stepHost plugin.Step = "host"
)

var info = plugin.Info{
	Name:       "veth-ptp",
	About:      "netns-cni veth-ptp: point-to-point veth, host routes, IP forwarding and masquerade",
	VethPrefix: "vp",
	Steps:      []plugin.Step{stepContainer, stepHost},
}

// Config is the veth-ptp network config: the reference ptp's keys, all of
// them shared with bridge-nat (plugin.VethConf).
type Config struct {
	plugin.VethConf
}

// CheckIPAM requires addresses: a point-to-point link routes them.
func (c *Config) CheckIPAM(m *plugin.IPAM) error {
	if m == nil {
		return plugin.ConfigError(`"ipam": missing; veth-ptp needs addresses, e.g. {"type": "host-local", "subnet": "10.22.0.0/16"}`)
	}
	return nil
}

// Traits: the host routes every packet of the network.
func (c *Config) Traits() plugin.Traits { return plugin.Traits{Forwarding: true} }

// Setup addresses and routes both ends.
func (c *Config) Setup(add *plugin.Add) error {
	if err := add.Run(stepContainer, setupContainer); err != nil {
		return err
	}
	return add.Run(stepHost, setupHost)
}

// setupContainer gives the container end its addresses (with their
// subnet's prefix length but no prefix route), the point-to-point routes
// to each gateway, and exactly IPAM's routes, as the reference ptp does:
// no default route unless IPAM has one, so a container on several
// networks keeps the default route of the network that has it.
func setupContainer(add *plugin.Add) (func() error, error) {
	h, link, ips := add.Target.Cont, add.ContLink, add.IPAMResult.IPs
	gws, err := gateways(ips)
	if err != nil {
		return nil, err
	}
	if err := netconf.SetupLink(add.Target.NS, h, link, ips, netconf.AddrOptions{}); err != nil {
		return nil, err
	}
	for i, ip := range ips {
		if err := netconf.PointToPoint(h, link, ip, gws[i]); err != nil {
			return nil, err
		}
	}
	add.Routes, err = netconf.AddRoutes(h, link, add.IPAMResult.Routes, gws, false)
	return nil, err
}

// setupHost puts each gateway on the host end, routes each container
// address to it, and sets it up.
func setupHost(add *plugin.Add) (func() error, error) {
	gws, err := gateways(add.IPAMResult.IPs)
	if err != nil {
		return nil, err
	}
	return nil, netconf.PointToPointHost(add.Target.Host, add.HostLink, add.IPAMResult.IPs, gws)
}

// Check verifies what point-to-point adds on both ends.
func (c *Config) Check(k *plugin.Checked) error {
	gws, err := gateways(k.Own.IPs)
	if err != nil {
		return err
	}
	t := k.Target
	return netconf.CheckPointToPoint(t.Host, t.Cont, k.HostLink, k.ContLink, k.Own.IPs, gws)
}

// gateways are the addresses' gateways (netconf.Gateway), in order.
func gateways(ips []*current.IPConfig) ([]net.IP, error) {
	gws := make([]net.IP, len(ips))
	for i, ip := range ips {
		gw, err := netconf.Gateway(ip)
		if err != nil {
			return nil, err
		}
		gws[i] = gw
	}
	return gws, nil
}
