package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// faultConfigs are, per plugin, configs that together take every step of
// its ADD: each step is injected with each config on whose path it lies.
var faultConfigs = map[string][]string{
	"veth-ptp": {
		`"ipMasq":true,"ipMasqBackend":"nftables",` + faultPorts,
		`"ipMasq":true,"ipMasqBackend":"iptables",` + faultPorts,
	},
	"bridge-nat": {
		`"bridge":"brf0","isGateway":true,"isDefaultGateway":true,"ipMasq":true,"macspoofchk":true,"hairpinMode":true,` + faultPorts,
		`"bridge":"brf1","ipMasq":true,"ipMasqBackend":"iptables","portIsolation":true,"removeEmptyBridge":true,` + faultPorts,
	},
}

// faultPorts are port mappings of both protocols, as a runtime passes them.
const faultPorts = `"capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":18080,"containerPort":80},{"hostPort":18053,"containerPort":53,"protocol":"udp"}]}`

// listSteps asks a fault-injection build of plugin for the steps its ADD
// may take: the constants of pkg/plugin and of the plugin's driver.
func listSteps(t *testing.T, plugin string) []string {
	t.Helper()
	cmd := exec.Command(filepath.Join(faultDir, plugin))
	cmd.Env = []string{"NETNS_CNI_TEST_LIST_STEPS=1"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: list steps: %v", plugin, err)
	}
	var steps []string
	if err := json.Unmarshal(out, &steps); err != nil || len(steps) == 0 {
		t.Fatalf("%s: list steps: %v %q", plugin, err, out)
	}
	return steps
}

// TestFailureAfterEachStep makes ADD fail right after each of its steps in
// turn, for every step each plugin declares, and checks that the failed
// ADD left nothing behind: not in the host (links, addresses, routes, NAT
// and filter rules, reservations), not in the pod. A step that no config
// reaches fails the test, so a new step cannot go untested.
func TestFailureAfterEachStep(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		t.Run(plugin, func(t *testing.T) {
			steps := listSteps(t, plugin)
			w := newWorld(t)
			injected := map[string]bool{}
			for ci, extra := range faultConfigs[plugin] {
				stdin := w.pluginStdin("1.1.0", fmt.Sprintf("fault%d", ci), plugin, families[2], extra)
				for _, step := range steps {
					t.Run(fmt.Sprintf("%d/%s", ci, step), func(t *testing.T) {
						if w.injectFailure(t, plugin, stdin, step, fmt.Sprintf("%d-%s", ci, step)) {
							injected[step] = true
						}
					})
				}
			}
			for _, step := range steps {
				if !injected[step] {
					t.Errorf("%s: step %q was never injected: add a config to faultConfigs that takes it", plugin, step)
				}
			}
		})
	}
}

// injectFailure runs ADD failing after step and checks it left nothing. It
// reports false when the step is not on this config's path (ADD
// succeeded; then DEL must leave nothing either).
func (w *world) injectFailure(t *testing.T, plugin, stdin, step, name string) bool {
	pod := w.sb.PodT(t, "p-"+name)
	id := "c-" + name
	before := w.hostState(t)
	r := w.execIn(faultDir, plugin, w.pluginEnv("ADD", id, pod.Path(), "eth0", "NETNS_CNI_TEST_FAIL_AFTER="+step), stdin)
	if r.exit == 0 {
		if d := w.execIn(faultDir, plugin, w.pluginEnv("DEL", id, pod.Path(), "eth0"), stdin); d.exit != 0 {
			t.Fatalf("DEL: %s", d.stdout)
		}
		if after := w.settled(t, before); after != before {
			t.Fatalf("DEL left:\n%s", stateDiff(before, after))
		}
		return false
	}
	if e := r.cniError(t); !strings.Contains(e.Msg, fmt.Sprintf("injected failure after step %q", step)) {
		t.Fatalf("ADD failed otherwise: %+v", e)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("ADD failing after %s left:\n%s", step, stateDiff(before, after))
	}
	if got := linkNames(t, pod); len(got) != 1 {
		t.Fatalf("pod left with links %v", got)
	}
	return true
}

// TestBridgeRollbackRestoresTheBridge: an ADD that fails on a bridge that
// was there before leaves the bridge as it found it: an address
// forceAddress replaced comes back, and the VLAN device and the bridge's
// VLAN entry a "vlan" config made go (where this kernel's bridge filters
// VLANs; the forceAddress half runs everywhere).
func TestBridgeRollbackRestoresTheBridge(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	w := newWorld(t)
	cases := []struct {
		name, setup, extra string
	}{
		{"forceAddress", "ip link add brrb0 type bridge; ip addr add 10.99.0.1/16 dev brrb0; ip link set brrb0 up",
			`"bridge":"brrb0","isGateway":true,"forceAddress":true`},
	}
	if vlanFilteringWorks(t, w) {
		cases = append(cases, struct{ name, setup, extra string }{"vlan", "ip link add brrb1 type bridge vlan_filtering 1; ip link set brrb1 up",
			`"bridge":"brrb1","isGateway":true,"vlan":10`})
	} else {
		t.Log("this kernel's bridge has no VLAN filtering: the vlan half is not run")
	}
	for _, tc := range cases {
		for _, step := range []string{"gateway", "container", "masquerade"} {
			t.Run(tc.name+"/"+step, func(t *testing.T) {
				for _, c := range strings.Split(tc.setup, "; ") {
					if err := w.inHost(func() error {
						if out, err := exec.Command("sh", "-c", c).CombinedOutput(); err != nil {
							return fmt.Errorf("%s: %w %s", c, err, out)
						}
						return nil
					}); err != nil {
						t.Fatal(err)
					}
				}
				t.Cleanup(func() {
					_ = w.inHost(func() error { return exec.Command("sh", "-c", "ip link del brrb0; ip link del brrb1").Run() })
				})
				before, vlans := w.hostState(t), w.bridgeVlans(t)
				stdin := w.pluginStdin("1.1.0", "rb-"+tc.name, "bridge-nat", families[0], `"ipMasq":true,`+tc.extra)
				pod := w.sb.PodT(t, "p-"+tc.name+"-"+step)
				r := w.execIn(faultDir, "bridge-nat", w.pluginEnv("ADD", "c-"+step, pod.Path(), "eth0", "NETNS_CNI_TEST_FAIL_AFTER="+step), stdin)
				if e := r.cniError(t); !strings.Contains(e.Msg, "injected failure") {
					t.Fatalf("ADD failed otherwise: %+v", e)
				}
				if after := w.settled(t, before); after != before {
					t.Fatalf("the bridge after a failed ADD:\n%s", stateDiff(before, after))
				}
				if after := w.bridgeVlans(t); after != vlans {
					t.Fatalf("VLANs after a failed ADD:\n%s", stateDiff(vlans, after))
				}
			})
		}
	}
}

// bridgeVlans lists the VLAN entries of the fake host's bridges.
func (w *world) bridgeVlans(t *testing.T) string {
	var out []byte
	_ = w.inHost(func() (err error) {
		out, err = exec.Command("bridge", "vlan", "show").CombinedOutput()
		if err != nil {
			t.Errorf("bridge vlan show: %v %s", err, out)
		}
		return nil
	})
	return string(out)
}
