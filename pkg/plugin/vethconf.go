package plugin

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/nat"
)

// VethConf is the config of a veth plugin: the keys every plugin has, and
// those the reference ptp and bridge share with the same meaning. A veth
// plugin's config struct embeds it and adds its own keys. Validate checks
// these keys once and keeps what it parsed, so nothing parses them again.
type VethConf struct {
	NetConf
	RuntimeArgs
	// MTU of both veth ends; 0 keeps the kernel's default.
	MTU int `json:"mtu,omitempty"`
	// IPMasq masquerades traffic from the network to anywhere but the
	// network itself, multicast and NonMasqueradeCIDRs.
	IPMasq bool `json:"ipMasq"`
	// IPMasqBackend is "nftables" (the default) or "iptables", for the
	// masquerade and the port mappings both.
	IPMasqBackend string `json:"ipMasqBackend,omitempty"`
	// NonMasqueradeCIDRs are destinations reached unmasqueraded, with the
	// containers' own addresses (a cluster's pod CIDR across nodes).
	NonMasqueradeCIDRs []string `json:"nonMasqueradeCIDRs,omitempty"`
	// ForwardAccept accepts the network's forwarded traffic (its subnets
	// out, and the replies) in a chain of its own jumped to from the
	// filter FORWARD chain, ahead of a DROP policy such as Docker's.
	// Default true; false for operators who manage FORWARD themselves.
	ForwardAccept *bool `json:"forwardAccept,omitempty"`

	mac    net.HardwareAddr
	noMasq []netip.Prefix
}

// Veth returns the shared part of a veth plugin's config.
func (c *VethConf) Veth() *VethConf { return c }

// MAC is the container interface's requested MAC address, nil for none.
func (c *VethConf) MAC() net.HardwareAddr { return c.mac }

// AcceptsForward is ForwardAccept with its default, true.
func (c *VethConf) AcceptsForward() bool { return c.ForwardAccept == nil || *c.ForwardAccept }

// NoMasq are the parsed NonMasqueradeCIDRs.
func (c *VethConf) NoMasq() []netip.Prefix { return c.noMasq }

// checkMTU refuses an "mtu" below IPv6's minimum link MTU (1280, RFC 8200
// section 5) for a network with IPv6 subnets in host-local: the kernel
// would refuse the interface's IPv6 address only once the veth exists.
// (A delegated IPAM's addresses are known only after it ran.)
func (c *VethConf) checkMTU(m *IPAM) error {
	if c.MTU == 0 || c.MTU >= 1280 || m == nil || m.Local == nil {
		return nil
	}
	for _, p := range m.Local.Subnets() {
		if p.Addr().Is6() {
			return ConfigError(`"mtu": must be at least 1280 with an IPv6 subnet (%s) in "ipam" (IPv6's minimum link MTU, RFC 8200 section 5), got %d`, p, c.MTU)
		}
	}
	return nil
}

// Validate checks the shared keys, each error naming its key, and keeps
// the parsed values. A plugin config with keys of its own calls it from
// its own Validate.
func (c *VethConf) Validate() []error {
	var errs []error
	if c.MTU != 0 && (c.MTU < 68 || c.MTU > 65535) {
		errs = append(errs, fmt.Errorf(`"mtu": must be 68-65535, got %d`, c.MTU))
	}
	if c.IPMasqBackend != "" && c.IPMasqBackend != nat.NFTables && c.IPMasqBackend != nat.IPTables {
		errs = append(errs, fmt.Errorf(`"ipMasqBackend": must be "nftables" or "iptables", got %q`, c.IPMasqBackend))
	}
	c.noMasq = nil
	for i, v := range c.NonMasqueradeCIDRs {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			errs = append(errs, fmt.Errorf(`"nonMasqueradeCIDRs[%d]": %q is not a CIDR`, i, v))
			continue
		}
		c.noMasq = append(c.noMasq, p.Masked())
	}
	errs = append(errs, hostport.Validate(c.RuntimeConfig.PortMappings)...)
	mac, err := c.parseMAC(c.cniArgs)
	if err != nil {
		errs = append(errs, err)
	}
	c.mac = mac
	return errs
}

// RuntimeArgs are what a runtime asks of one attachment: the container
// interface's MAC address — runtimeConfig.mac (capability "mac"),
// args.cni.mac, or CNI_ARGS MAC=, in that order — and the host ports to
// forward to it, runtimeConfig.portMappings (capability "portMappings",
// pkg/hostport).
type RuntimeArgs struct {
	RuntimeConfig struct {
		Mac          string             `json:"mac,omitempty"`
		PortMappings []hostport.Mapping `json:"portMappings,omitempty"`
	} `json:"runtimeConfig"`
	Args struct {
		CNI struct {
			Mac string `json:"mac,omitempty"`
		} `json:"cni"`
	} `json:"args"`
}

// parseMAC returns the requested MAC (nil for none), runtimeConfig first.
func (m RuntimeArgs) parseMAC(cniArgs string) (net.HardwareAddr, error) {
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
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 || mac.String() == "00:00:00:00:00:00" {
		msg := fmt.Sprintf("%s: %q is not a unicast Ethernet MAC address", key, s)
		if key == "CNI_ARGS MAC" {
			return nil, ipam.ArgsError{Msg: msg}
		}
		return nil, errors.New(msg)
	}
	return mac, nil
}
