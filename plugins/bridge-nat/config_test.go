package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/google/go-cmp/cmp"

	"github.com/netns-cni/netns-cni/pkg/inspect"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

func load(t *testing.T, keys string) (*Config, error) {
	t.Helper()
	return plugin.Load[Config](&skel.CmdArgs{ContainerID: "c", IfName: "eth0",
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"net","type":"bridge-nat"` + keys + `}`)})
}

func TestConfigDefaults(t *testing.T) {
	c, err := load(t, `,"isDefaultGateway":true`)
	if err != nil {
		t.Fatal(err)
	}
	// The reference bridge's defaults.
	if c.Bridge != "cni0" || !c.IsGateway || !*c.PreserveDefaultVlan || c.RemoveEmptyBridge {
		t.Fatalf("defaults: %+v", c)
	}
	if got := c.Traits(); got != (plugin.Traits{Forwarding: true, Bridge: "cni0", GatewayLink: "cni0"}) {
		t.Fatalf("traits of a gateway bridge: %+v", got)
	}
	if c, _ := load(t, ""); c.Traits().Forwarding {
		t.Fatal("a bridge that is no gateway and masquerades nothing turns forwarding on")
	}
}

func TestConfigPort(t *testing.T) {
	c, err := load(t, `,"hairpinMode":true,"portIsolation":true,"vlan":10,"preserveDefaultVlan":false,
		"vlanTrunk":[{"id":20},{"minID":30,"maxID":32}],"mtu":9000,"ipMasq":true`)
	if err != nil {
		t.Fatal(err)
	}
	want := netconf.PortSpec{Hairpin: true, Isolated: true, Vlan: 10, Trunk: []int{20, 30, 31, 32}}
	if diff := cmp.Diff(want, c.port); diff != "" {
		t.Fatalf("port spec (-want +got): %s", diff)
	}
	if c.MTU != 9000 || !c.IPMasq {
		t.Fatalf("shared keys: %+v", c.VethConf)
	}
	// A VLAN port's gateway is the VLAN link: its traffic is routed from
	// there (STATUS reads the FORWARD rules for it).
	if got := c.Traits().GatewayLink; got != "cni0.10" {
		t.Fatalf("gateway link of a VLAN port: %q, want cni0.10", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		keys string
		want []string
	}{
		{`,"bridge":"a-bridge-name-too-long"`, []string{`"bridge": "a-bridge-name-too-long" is not a valid interface name: interface name is too long`}},
		{`,"bridge":"br:0"`, []string{`"bridge": "br:0" is not a valid interface name`}},
		{`,"bridge":".."`, []string{`"bridge": ".." is not a valid interface name`}},
		{`,"bridge":"br%d"`, []string{`"bridge": "br%d" is not a valid interface name: no '%'`}},
		{`,"bridge":"br\u0001"`, []string{`"bridge": "br\x01" is not a valid interface name`}},
		{`,"hairpinMode":true,"promiscMode":true`, []string{`"hairpinMode" and "promiscMode"`}},
		{`,"vlan":4095`, []string{`"vlan": must be 0-4094, got 4095`}},
		{`,"vlanTrunk":[{"minID":30,"maxID":20}]`, []string{`"vlanTrunk[0]"`}},
		{`,"vlanTrunk":[{}]`, []string{`"vlanTrunk[0]": give "id"`}},
		{`,"vlanTrunk":[{"id":5}],"isGateway":true`, []string{`"isGateway" with "vlanTrunk" needs "vlan"`}},
		// The shared keys are checked too, all problems at once.
		{`,"mtu":9,"vlan":-1`, []string{`"mtu": must be 68-65535, got 9`, `"vlan"`}},
	} {
		_, err := load(t, tc.keys)
		if err == nil {
			t.Errorf("%s: accepted, want code 7", tc.keys)
			continue
		}
		e := plugin.CNIError(err)
		if e.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("%s: %v, want code 7", tc.keys, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Msg, w) {
				t.Errorf("%s: %q lacks %q", tc.keys, e.Msg, w)
			}
		}
	}
}

func TestConfigCheckIPAM(t *testing.T) {
	some := &plugin.IPAM{Type: "host-local"}
	for _, tc := range []struct {
		keys string
		m    *plugin.IPAM
		want string
	}{
		{"", nil, ""}, // L2 mode
		{`,"isGateway":true`, some, ""},
		{`,"isGateway":true`, nil, `"isGateway"/"ipMasq" need addresses`},
		{`,"ipMasq":true`, nil, `"isGateway"/"ipMasq" need addresses`},
		{`,"disableContainerInterface":true`, some, `"disableContainerInterface" and "ipam"`},
		{`,"disableContainerInterface":true`, nil, ""},
	} {
		c, err := load(t, tc.keys)
		if err != nil {
			t.Fatal(err)
		}
		err = c.CheckIPAM(tc.m)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s with IPAM %v: %v", tc.keys, tc.m != nil, err)
		case tc.want != "" && (err == nil || plugin.CNIError(err).Code != types.ErrInvalidNetworkConfig || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s with IPAM %v: %v, want code 7 with %q", tc.keys, tc.m != nil, err, tc.want)
		}
	}
	if c, _ := load(t, `,"disableContainerInterface":true`); !c.Traits().ContainerDown {
		t.Fatal("disableContainerInterface: CHECK must not require the interface up")
	}
}

// TestInfo: the plugin's name, host link prefix and steps are fit for
// pkg/plugin.
func TestInfo(t *testing.T) {
	if err := plugin.ValidateInfo(info); err != nil {
		t.Fatal(err)
	}
}

// TestKeysKnownToAudit: the operator command's audit knows every key of
// this config, so it names none of them as unknown.
func TestKeysKnownToAudit(t *testing.T) {
	own := slices.DeleteFunc(plugin.JSONKeys(&Config{}), func(k string) bool { return slices.Contains(plugin.JSONKeys(&plugin.VethConf{}), k) })
	if !slices.Equal(own, inspect.BridgeKeys) {
		t.Fatalf("bridge-nat's own keys %q, inspect.BridgeKeys %q", own, inspect.BridgeKeys)
	}
}
