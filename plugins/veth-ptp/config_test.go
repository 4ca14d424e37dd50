package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/plugin"
)

func load(t *testing.T, keys, cniArgs string) (*Config, error) {
	t.Helper()
	return plugin.Load[Config](&skel.CmdArgs{ContainerID: "c", IfName: "eth0", Args: cniArgs,
		StdinData: []byte(`{"cniVersion":"1.1.0","name":"net","type":"veth-ptp"` + keys + `}`)})
}

func TestConfig(t *testing.T) {
	c, err := load(t, `,"mtu":1400,"ipMasq":true,"ipMasqBackend":"iptables","nonMasqueradeCIDRs":["10.244.1.7/16","fd00::/8"],
		"runtimeConfig":{"mac":"02:00:00:00:00:07"},"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}`, "MAC=02:00:00:00:00:09")
	if err != nil {
		t.Fatal(err)
	}
	if c.MTU != 1400 || !c.IPMasq || c.IPMasqBackend != "iptables" {
		t.Fatalf("keys not decoded: %+v", c.VethConf)
	}
	// Parsed once, by Validate: CIDRs masked, runtimeConfig's MAC first.
	var got []string
	for _, p := range c.NoMasq() {
		got = append(got, p.String())
	}
	if want := []string{"10.244.0.0/16", "fd00::/8"}; !slices.Equal(got, want) {
		t.Fatalf("nonMasqueradeCIDRs %v, want %v", got, want)
	}
	if c.MAC().String() != "02:00:00:00:00:07" {
		t.Fatalf("MAC %v, want runtimeConfig's", c.MAC())
	}
	if c, _ := load(t, "", "IgnoreUnknown=1;MAC=02:00:00:00:00:09"); c.MAC().String() != "02:00:00:00:00:09" {
		t.Fatalf("MAC from CNI_ARGS: %v", c.MAC())
	}
	if !c.Traits().Forwarding {
		t.Fatal("veth-ptp routes every packet: forwarding must be on")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		keys, args string
		want       []string
	}{
		{`,"mtu":20`, "", []string{`"mtu": must be 68-65535, got 20`}},
		{`,"ipMasqBackend":"pf"`, "", []string{`"ipMasqBackend": must be "nftables" or "iptables"`}},
		{`,"nonMasqueradeCIDRs":["10.0.0.0/33","x"]`, "", []string{`"nonMasqueradeCIDRs[0]"`, `"nonMasqueradeCIDRs[1]"`}},
		{`,"args":{"cni":{"mac":"01:00:00:00:00:01"}}`, "", []string{`"args.cni.mac": "01:00:00:00:00:01" is not a unicast`}},
		{`,"runtimeConfig":{"mac":"00:00:00:00:00:00"}`, "", []string{`"runtimeConfig.mac": "00:00:00:00:00:00" is not a unicast`}},
		// Every problem at once, each naming its key.
		{`,"mtu":70000,"ipMasqBackend":"x"`, "", []string{`"mtu"`, `"ipMasqBackend"`}},
	} {
		_, err := load(t, tc.keys, tc.args)
		if err == nil {
			t.Errorf("%s %s: accepted, want code 7", tc.keys, tc.args)
			continue
		}
		e := plugin.CNIError(err)
		if e.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("%s %s: %v, want code 7", tc.keys, tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Msg, w) {
				t.Errorf("%s %s: %q lacks %q", tc.keys, tc.args, e.Msg, w)
			}
		}
	}
	if e := new(Config).CheckIPAM(nil); e == nil || !strings.Contains(e.Error(), `"ipam": missing`) {
		t.Fatalf("no IPAM: %v", e)
	}
	if _, err := load(t, `,"mtu":"big"`, ""); plugin.CNIError(err).Code != types.ErrDecodingFailure {
		t.Fatalf("a string for a number: %v, want code 6", err)
	}
}

// TestInfo: the plugin's name, host link prefix and steps are fit for
// pkg/plugin.
func TestInfo(t *testing.T) {
	if err := plugin.ValidateInfo(info); err != nil {
		t.Fatal(err)
	}
}

// TestConfigBadCNIArgs: a bad value in CNI_ARGS is the runtime's
// environment, not the config: code 4 naming it.
func TestConfigBadCNIArgs(t *testing.T) {
	_, err := load(t, "", "MAC=zz")
	if err == nil {
		t.Fatal("MAC=zz accepted")
	}
	if e := plugin.CNIError(err); e.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(e.Msg, `CNI_ARGS MAC: "zz"`) {
		t.Fatalf("MAC=zz: %v, want code 4 naming CNI_ARGS MAC", err)
	}
}
