package main

import (
	"fmt"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

// Config is the bridge-nat network config: the reference bridge's keys and
// defaults, plus removeEmptyBridge. The keys it shares with veth-ptp
// (mtu, ipMasq, ipMasqBackend, nonMasqueradeCIDRs, the MAC) are in
// plugin.VethConf.
type Config struct {
	plugin.VethConf
	// Bridge is the bridge's name; default "cni0".
	Bridge string `json:"bridge"`
	// IsGateway puts each subnet's gateway address on the bridge.
	IsGateway bool `json:"isGateway"`
	// IsDefaultGateway also routes the container's default route through
	// the bridge; it implies IsGateway.
	IsDefaultGateway bool `json:"isDefaultGateway"`
	// ForceAddress replaces a different address the bridge already has.
	ForceAddress bool `json:"forceAddress"`
	// HairpinMode lets a container reach itself through the bridge (a
	// port mapping to its own host port).
	HairpinMode bool `json:"hairpinMode"`
	PromiscMode bool `json:"promiscMode"`
	// Vlan is the VLAN of the container's port (untagged), 0 for none.
	Vlan int `json:"vlan"`
	// VlanTrunk are VLANs the port carries tagged.
	VlanTrunk []VlanTrunk `json:"vlanTrunk,omitempty"`
	// PreserveDefaultVlan keeps VLAN 1 on a VLAN port; default true.
	PreserveDefaultVlan *bool `json:"preserveDefaultVlan,omitempty"`
	// EnableDAD runs IPv6 duplicate address detection on the container's
	// addresses (ADD then takes seconds); off by default.
	EnableDAD bool `json:"enabledad"`
	// MacSpoofChk drops frames from the container with another source MAC.
	MacSpoofChk bool `json:"macspoofchk"`
	// DisableContainerInterface leaves the container's interface down.
	DisableContainerInterface bool `json:"disableContainerInterface"`
	// PortIsolation keeps the containers on the bridge from talking to
	// each other; they reach only the gateway and beyond.
	PortIsolation bool `json:"portIsolation"`
	// RemoveEmptyBridge deletes the bridge (if netns-cni made it) when the
	// last container leaves it. Off by default, as in the reference.
	RemoveEmptyBridge bool `json:"removeEmptyBridge"`

	// port is the port's setup, parsed by Validate.
	port netconf.PortSpec
}

// VlanTrunk is one VLAN id or a range of them.
type VlanTrunk struct {
	MinID *int `json:"minID,omitempty"`
	MaxID *int `json:"maxID,omitempty"`
	ID    *int `json:"id,omitempty"`
}

// SetDefaults applies the reference's defaults.
func (c *Config) SetDefaults() {
	if c.Bridge == "" {
		c.Bridge = "cni0"
	}
	if c.IsDefaultGateway {
		c.IsGateway = true
	}
	if c.PreserveDefaultVlan == nil {
		t := true
		c.PreserveDefaultVlan = &t
	}
}

// Validate reports every problem, each naming its keys, before anything
// is made.
func (c *Config) Validate() []error {
	errs := c.VethConf.Validate()
	if err := netconf.ValidLinkName(c.Bridge); err != nil {
		errs = append(errs, fmt.Errorf(`"bridge": %w`, err))
	}
	if c.HairpinMode && c.PromiscMode {
		errs = append(errs, fmt.Errorf(`"hairpinMode" and "promiscMode" cannot both be true`))
	}
	if c.Vlan < 0 || c.Vlan > 4094 {
		errs = append(errs, fmt.Errorf(`"vlan": must be 0-4094, got %d`, c.Vlan))
	}
	trunk, err := c.trunk()
	if err != nil {
		errs = append(errs, err)
	}
	c.port = netconf.PortSpec{Hairpin: c.HairpinMode, Isolated: c.PortIsolation, Vlan: c.Vlan, Trunk: trunk,
		PreserveDefaultVlan: *c.PreserveDefaultVlan}
	if (c.Vlan > 0 || len(c.VlanTrunk) > 0) && c.IsGateway && c.Vlan == 0 {
		errs = append(errs, fmt.Errorf(`"isGateway" with "vlanTrunk" needs "vlan": the gateway lives in the port's own VLAN`))
	}
	return errs
}

// trunk expands vlanTrunk into VLAN ids.
func (c *Config) trunk() ([]int, error) {
	var ids []int
	for i, t := range c.VlanTrunk {
		switch {
		case t.ID != nil:
			if *t.ID < 1 || *t.ID > 4094 {
				return nil, fmt.Errorf(`"vlanTrunk[%d].id": must be 1-4094, got %d`, i, *t.ID)
			}
			ids = append(ids, *t.ID)
		case t.MinID != nil && t.MaxID != nil:
			if *t.MinID < 1 || *t.MaxID > 4094 || *t.MinID > *t.MaxID {
				return nil, fmt.Errorf(`"vlanTrunk[%d]": minID %d and maxID %d must be 1-4094, minID ≤ maxID`, i, *t.MinID, *t.MaxID)
			}
			for v := *t.MinID; v <= *t.MaxID; v++ {
				ids = append(ids, v)
			}
		default:
			return nil, fmt.Errorf(`"vlanTrunk[%d]": give "id", or both "minID" and "maxID"`, i)
		}
	}
	return ids, nil
}

// CheckIPAM refuses what cannot work with the addresses, or without them.
func (c *Config) CheckIPAM(m *plugin.IPAM) error {
	if m != nil && c.DisableContainerInterface {
		return plugin.ConfigError(`"disableContainerInterface" and "ipam": a container interface left down cannot use addresses; drop one of them`)
	}
	if m == nil && (c.IsGateway || c.IPMasq) {
		return plugin.ConfigError(`"isGateway"/"ipMasq" need addresses, but "ipam" is missing or empty (L2 mode)`)
	}
	return nil
}

// Traits: the host routes the network's traffic only as its gateway, from
// the bridge, or from its VLAN link for a VLAN port.
func (c *Config) Traits() plugin.Traits {
	gw := c.Bridge
	if c.Vlan > 0 {
		gw = netconf.VlanLinkName(c.Bridge, c.Vlan)
	}
	return plugin.Traits{Forwarding: c.IsGateway || c.IPMasq, ContainerDown: c.DisableContainerInterface, Bridge: c.Bridge, GatewayLink: gw}
}
