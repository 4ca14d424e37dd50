// Command bridge-nat connects containers to a Linux bridge on the host with
// a veth pair each; the bridge can be their gateway (isGateway), and with
// ipMasq traffic leaving the network is masqueraded by one set of rules per
// network. A drop-in for the reference "bridge" plugin: same keys, same
// defaults, and behaves better — no fixed sleeps, no DAD waits, a bridge MAC
// that does not change under the containers, nothing left behind on
// failure, DEL that works when the namespace is gone.
//
// pkg/plugin runs the verbs; this package is the config (config.go) and
// the driver (driver.go).
package main

import "github.com/netns-cni/netns-cni/pkg/plugin"

func main() { plugin.VethMain[Config](info) }

var info = plugin.Info{
	Name:       "bridge-nat",
	About:      "netns-cni bridge-nat: veth into a Linux bridge acting as gateway, with masquerade",
	VethPrefix: "vb",
	Steps:      []plugin.Step{stepBridge, stepGateway, stepBridgeUp, stepPort, stepMacSpoofChk, stepContainer},
}
