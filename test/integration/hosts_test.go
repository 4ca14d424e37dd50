package integration

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// hostSysctl reads a sysctl of the fake host (path under /proc/sys).
func (w *world) hostSysctl(t *testing.T, path string) string {
	t.Helper()
	var b []byte
	var err error
	_ = w.inHost(func() error { b, err = os.ReadFile(filepath.Join("/proc/sys", path)); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestHostLinksIgnoreRouterAdvertisements: every host-side link netns-cni
// creates (host veths of both plugins, the bridge) ignores router
// advertisements, so a container cannot configure the host with them: the
// routed ones with accept_ra 0, a bridge port by having no IPv6 at all
// (disable_ipv6 1: it needs no address, and its delete is half as slow
// on a dual-stack bridge without).
func TestHostLinksIgnoreRouterAdvertisements(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct{ plugin, extra string }{
		{"veth-ptp", ""},
		{"bridge-nat", `"bridge":"brra0","isGateway":true,"removeEmptyBridge":true`},
	} {
		t.Run(tc.plugin, func(t *testing.T) {
			list := w.list("1.1.0", "ra-"+tc.plugin, w.ptpConf(tc.plugin, families[2], tc.extra))
			pod := w.sb.PodT(t, "p-"+tc.plugin)
			rt := w.rt("c-"+tc.plugin, pod, "eth0")
			res, err := w.add(list, rt)
			if err != nil {
				t.Fatal(err)
			}
			for _, iface := range res.Interfaces {
				if iface.Sandbox != "" {
					continue
				}
				if tc.plugin == "bridge-nat" && iface.Name != "brra0" {
					if got := w.hostSysctl(t, "net/ipv6/conf/"+iface.Name+"/disable_ipv6"); got != "1" {
						t.Errorf("bridge port %s disable_ipv6 = %s, want 1", iface.Name, got)
					}
					continue
				}
				if got := w.hostSysctl(t, "net/ipv6/conf/"+iface.Name+"/accept_ra"); got != "0" {
					t.Errorf("%s accept_ra = %s, want 0", iface.Name, got)
				}
			}
			if err := w.del(list, rt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestManyIPv6RangeSets: ten IPv6 range sets with long rangeStart values.
// ADD used to fail after reserving ("state record too long") and keep the
// reservations; now ADD succeeds and DEL leaves nothing.
func TestManyIPv6RangeSets(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	var sets []string
	for i := range 10 {
		sets = append(sets, fmt.Sprintf(`[{"subnet":"fd12:3456:789a:bc%02x::/64","rangeStart":"fd12:3456:789a:bc%02x:ffff:ffff:ffff:ff00"}]`, i, i))
	}
	fam := family{"v6x10", "[" + strings.Join(sets, ",") + "]", false, true}
	list := w.list("1.1.0", "many", w.ptpConf("veth-ptp", fam, ""))
	pod := w.sb.PodT(t, "pod")
	rt := w.rt("ctr", pod, "eth0")
	res, err := w.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 10 {
		t.Fatalf("%d addresses, want one per range set", len(res.IPs))
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestIPv6OffInThePod: with IPv6 switched off in the pod's namespace (all
// and default disable_ipv6, as some hosts set and new namespaces inherit),
// an IPv6-only or dual-stack ADD turns IPv6 on for the container interface,
// as the reference does, and the pod reaches its IPv6 gateway.
func TestIPv6OffInThePod(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		plugin, extra string
		fam           family
	}{
		{"veth-ptp", "", families[2]},
		{"veth-ptp", "", families[1]},
		{"bridge-nat", `"bridge":"brv6off","isGateway":true,"removeEmptyBridge":true`, families[2]},
		{"bridge-nat", `"bridge":"brv6off","isGateway":true,"removeEmptyBridge":true`, families[1]},
	} {
		name := tc.plugin + "-" + tc.fam.name
		t.Run(tc.plugin+"/"+tc.fam.name, func(t *testing.T) {
			before := w.hostState(t)
			pod := w.sb.PodT(t, "p-"+name)
			if err := pod.Do(func() error {
				for _, k := range []string{"all", "default"} {
					if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0o644); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			list := w.list("1.1.0", "v6off-"+name, w.ptpConf(tc.plugin, tc.fam, tc.extra))
			rt := w.rt("c-"+name, pod, "eth0")
			res, err := w.add(list, rt)
			if err != nil {
				t.Fatalf("ADD with IPv6 off in the pod: %v", err)
			}
			v6 := 0
			for _, ip := range res.IPs {
				if ip.Address.IP.To4() == nil {
					v6++
					if err := ping(t, pod, ip.Gateway.String()); err != nil {
						t.Fatal(err)
					}
				}
			}
			if v6 != 1 {
				t.Fatalf("ADD result has %d IPv6 addresses, want 1: %v", v6, res.IPs)
			}
			if err := w.check(list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := w.del(list, rt); err != nil {
				t.Fatal(err)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestConntrackForgottenOnDel: a pod's UDP flows to the outside leave
// conntrack entries in the host, IPv4 and IPv6; DEL (and GC, for a pod
// whose DEL never came) deletes every entry of the released addresses, so
// the next pod to get one receives no replies meant for the old one — and
// none of a bystander's on the same network. Nothing is left after.
func TestConntrackForgottenOnDel(t *testing.T) {
	w := newWorld(t)
	out := w.outside(t)
	for _, tc := range []struct{ plugin, extra, how string }{
		{"veth-ptp", "", "DEL"},
		{"bridge-nat", `,"bridge":"brct0","isGateway":true,"removeEmptyBridge":true`, "DEL"},
		{"veth-ptp", "", "GC"},
		{"bridge-nat", `,"bridge":"brct1","isGateway":true,"removeEmptyBridge":true`, "GC"},
	} {
		t.Run(tc.plugin+"/"+tc.how, func(t *testing.T) {
			before := w.hostState(t)
			list := w.list("1.1.0", "ct-"+tc.plugin+tc.how, w.ptpConf(tc.plugin, families[2], `"ipMasq":true`+tc.extra))
			pod := w.sb.PodT(t, "p-"+tc.plugin+"-"+tc.how)
			rt := w.rt("c-"+tc.how, pod, "eth0")
			// A bystander on the same network, whose flows must stay.
			other := w.sb.PodT(t, "o-"+tc.plugin+"-"+tc.how)
			ort := w.rt("o-"+tc.how, other, "eth0")
			var addrs, kept []string
			for _, p := range []struct {
				pod *nsutil.NS
				rt  *libcni.RuntimeConf
				to  *[]string
			}{{pod, rt, &addrs}, {other, ort, &kept}} {
				res, err := w.add(list, p.rt)
				if err != nil {
					t.Fatal(err)
				}
				for _, ip := range res.IPs {
					*p.to = append(*p.to, ip.Address.IP.String())
				}
				for _, dst := range []string{nstest.Outside4, nstest.Outside6} {
					if _, err := sourceSeen(t, p.pod, out, dst); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, a := range append(slices.Clone(addrs), kept...) {
				if n := w.conntrackOf(t, a); n == 0 {
					t.Fatalf("no conntrack entry of %s after its flow", a)
				}
			}
			w.removeBy(t, tc.how, list, rt, pod, types.GCAttachment{ContainerID: ort.ContainerID, IfName: "eth0"})
			for _, a := range addrs {
				if n := w.conntrackOf(t, a); n != 0 {
					t.Fatalf("%d conntrack entries of %s left after %s", n, a, tc.how)
				}
			}
			for _, a := range kept {
				if n := w.conntrackOf(t, a); n == 0 {
					t.Fatalf("%s of %s took the bystander's entries of %s", tc.how, addrs, a)
				}
			}
			w.removeBy(t, tc.how, list, ort, nil) // the bystander's turn: GC lists nothing
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// removeBy takes an attachment away as a runtime would: with DEL, or with
// GC (valid lists what stays), after its namespace went when pod is given.
func (w *world) removeBy(t *testing.T, how string, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf, pod *nsutil.NS, valid ...types.GCAttachment) {
	t.Helper()
	var err error
	if how == "GC" {
		if pod != nil {
			err = w.sb.RemovePod(pod)
		}
		if err == nil {
			err = w.gc(list, valid...)
		}
	} else {
		err = w.del(list, rt)
	}
	if err != nil {
		t.Fatalf("%s: %v", how, err)
	}
}

// conntrackOf counts the fake host's conntrack entries whose original
// source or reply destination is addr.
func (w *world) conntrackOf(t *testing.T, addr string) int {
	n := 0
	_ = w.inHost(func() error {
		fam := netlink.InetFamily(unix.AF_INET)
		if strings.Contains(addr, ":") {
			fam = unix.AF_INET6
		}
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.SrcIP.String() == addr || f.Reverse.DstIP.String() == addr {
				n++
			}
		}
		return nil
	})
	return n
}

// operatorAcceptsByInterface adds "-i iface -j ACCEPT" and "-o iface -j
// ACCEPT" to FORWARD in both families, as an operator who manages FORWARD
// does: the pod reaches the outside and STATUS no longer reports the
// policy. The rules go again before it returns.
func operatorAcceptsByInterface(t *testing.T, w *world, iface string, pod *nsutil.NS, list *libcni.NetworkConfigList) {
	t.Helper()
	rules := func(op string) error {
		return w.inHost(func() error {
			for _, c := range []string{"iptables", "ip6tables"} {
				for _, dir := range []string{"-i", "-o"} {
					if b, err := exec.Command(c, op, "FORWARD", dir, iface, "-j", "ACCEPT").CombinedOutput(); err != nil {
						return fmt.Errorf("%s %s: %w %s", c, op, err, b)
					}
				}
			}
			return nil
		})
	}
	if err := rules("-A"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := rules("-D"); err != nil {
			t.Error(err)
		}
	}()
	for _, dst := range []string{nstest.Outside4, nstest.Outside6} {
		if err := ping(t, pod, dst); err != nil {
			t.Fatalf("through the operator's rules for %s: %v", iface, err)
		}
	}
	if err := w.status(list); err != nil {
		t.Fatalf("STATUS with the operator's rules accepting %s: %v", iface, err)
	}
}

// TestForwardPolicyDrop: Docker sets the filter FORWARD policy to DROP.
// Pods of both plugins still reach the outside, through accept rules of
// the network's own that go with its last attachment; with
// "forwardAccept": false they do not, and STATUS says which policy blocks
// them.
func TestForwardPolicyDrop(t *testing.T) {
	w := newWorld(t)
	w.outside(t)
	if err := w.inHost(func() error {
		for _, c := range []string{"iptables", "ip6tables"} {
			if b, err := exec.Command(c, "-P", "FORWARD", "DROP").CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %w %s", c, err, b)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ plugin, extra string }{
		{"veth-ptp", `"ipMasq":true,"ipMasqBackend":"nftables"`},
		{"veth-ptp", `"ipMasq":true,"ipMasqBackend":"iptables"`},
		{"bridge-nat", `"ipMasq":true,"bridge":"brfw0","isGateway":true,"isDefaultGateway":true,"removeEmptyBridge":true`},
		{"bridge-nat", `"ipMasq":true,"ipMasqBackend":"iptables","bridge":"brfw0","isGateway":true,"isDefaultGateway":true,"removeEmptyBridge":true`},
	} {
		t.Run(tc.plugin+"/"+map[bool]string{true: "iptables", false: "nftables"}[strings.Contains(tc.extra, "iptables")], func(t *testing.T) {
			before := w.hostState(t)
			for _, accept := range []bool{true, false} {
				name := fmt.Sprintf("fw-%s-%v-%d", tc.plugin, accept, strings.Count(tc.extra, "iptables"))
				list := w.list("1.1.0", name, w.ptpConf(tc.plugin, families[2], tc.extra+fmt.Sprintf(`,"forwardAccept":%v`, accept)))
				pod := w.sb.PodT(t, "p-"+name)
				rt := w.rt("c-"+name, pod, "eth0")
				if _, err := w.add(list, rt); err != nil {
					t.Fatal(err)
				}
				for _, dst := range []string{nstest.Outside4, nstest.Outside6} {
					err := ping(t, pod, dst)
					if accept && err != nil {
						var rules []byte
						_ = w.inHost(func() error { rules, _ = exec.Command("iptables-save").CombinedOutput(); return nil })
						t.Fatalf("with the accept rules: %v\n%s", err, rules)
					}
					if !accept && err == nil {
						t.Fatalf("forwardAccept false, yet %s answered through a DROP policy", dst)
					}
				}
				err := w.status(list)
				if accept && err != nil {
					t.Fatalf("STATUS: %v", err)
				}
				var e *types.Error
				if !accept && (!errors.As(err, &e) || e.Code != 50 || !strings.Contains(e.Msg, "FORWARD policy is DROP") || !strings.Contains(e.Msg, `"forwardAccept"`)) {
					t.Fatalf("STATUS with forwardAccept false under a DROP policy: %v", err)
				}
				if !accept { // the operator accepts the network by its host interfaces, as is common
					operatorAcceptsByInterface(t, w, map[string]string{"veth-ptp": "vp+", "bridge-nat": "brfw0"}[tc.plugin], pod, list)
				}
				if accept {
					if err := w.check(list, rt); err != nil {
						t.Fatalf("CHECK: %v", err)
					}
				}
				if err := w.del(list, rt); err != nil {
					t.Fatal(err)
				}
				if after := w.settled(t, before); after != before {
					t.Fatalf("after the last DEL:\n%s", stateDiff(before, after))
				}
			}
		})
	}
}

// TestEditedConfigDropsOldRules: an operator turns ipMasq (with its
// ipMasqBackend) and forwardAccept off while a pod runs; the DEL of the
// network's last pod through the edited config, or a GC after the pod's
// namespace went, still removes the masquerade rules and the FORWARD
// accept rules the first config made (both used to stay when the edited
// config asked for no rules at all). An edit that no longer validates
// ("mtu": 20, "vlan": 5000: ADD refuses them) changes nothing: DEL and GC
// read only what identifies the attachment and remove it all (issue 11).
func TestEditedConfigDropsOldRules(t *testing.T) {
	w := newWorld(t)
	for i, tc := range []struct{ plugin, was, now, how string }{
		{"veth-ptp", `"ipMasq":true`, `"ipMasq":false,"forwardAccept":false`, "DEL"},
		{"veth-ptp", `"ipMasq":true,"ipMasqBackend":"iptables"`, `"forwardAccept":false`, "DEL"},
		{"bridge-nat", `"bridge":"bred0","isGateway":true,"ipMasq":true,"removeEmptyBridge":true`, `"bridge":"bred0","removeEmptyBridge":true`, "DEL"},
		{"veth-ptp", `"ipMasq":true,"ipMasqBackend":"iptables"`, `"forwardAccept":false`, "GC"},
		{"bridge-nat", `"bridge":"bred1","isGateway":true,"ipMasq":true,"removeEmptyBridge":true`, `"bridge":"bred1","removeEmptyBridge":true`, "GC"},
		{"veth-ptp", `"ipMasq":true`, `"ipMasq":true,"mtu":20`, "DEL"},
		{"veth-ptp", `"ipMasq":true,"ipMasqBackend":"iptables"`, `"ipMasq":true,"ipMasqBackend":"iptables","mtu":20`, "GC"},
		{"bridge-nat", `"bridge":"bred2","isGateway":true,"ipMasq":true,"removeEmptyBridge":true`, `"bridge":"bred2","isGateway":true,"ipMasq":true,"removeEmptyBridge":true,"vlan":5000`, "DEL"},
		{"bridge-nat", `"bridge":"bred3","isGateway":true,"ipMasq":true,"removeEmptyBridge":true`, `"bridge":"bred3","isGateway":true,"ipMasq":true,"removeEmptyBridge":true,"mtu":20`, "GC"},
	} {
		backend := map[bool]string{true: "iptables", false: "nftables"}[strings.Contains(tc.was, "iptables")]
		edit := map[bool]string{true: "invalid", false: "valid"}[strings.Contains(tc.now, `"mtu":20`) || strings.Contains(tc.now, `"vlan":5000`)]
		t.Run(tc.plugin+"/"+backend+"/"+edit+"/"+tc.how, func(t *testing.T) {
			before := w.hostState(t)
			name := fmt.Sprintf("edited-%s%s%d", tc.plugin, tc.how, i)
			was := w.list("1.1.0", name, w.ptpConf(tc.plugin, families[2], tc.was))
			now := w.list("1.1.0", name, w.ptpConf(tc.plugin, families[2], tc.now))
			if edit == "invalid" {
				if _, err := w.add(now, w.rt(fmt.Sprintf("refused%d", i), w.sb.PodT(t, fmt.Sprintf("r%d", i)), "eth0")); err == nil {
					t.Fatal("ADD through the invalid edit succeeded")
				}
			}
			pod := w.sb.PodT(t, fmt.Sprintf("p-%s%d", tc.plugin, i))
			rt := w.rt("c-"+name, pod, "eth0")
			if _, err := w.add(was, rt); err != nil {
				t.Fatal(err)
			}
			if with := w.hostState(t); !strings.Contains(strings.ToLower(with), "masquerade") {
				t.Fatalf("no masquerade rules after ADD:\n%s", with)
			}
			w.removeBy(t, tc.how, now, rt, pod)
			if after := w.settled(t, before); after != before {
				t.Fatalf("after the last DEL through the edited config:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestTypoNamed: a misspelt key is no error (conflists carry keys for
// other tools), but the plugin names it and the key it likely meant.
func TestTypoNamed(t *testing.T) {
	w := newWorld(t)
	pod := w.sb.PodT(t, "pod")
	stdin := w.pluginStdin("1.1.0", "typo", "veth-ptp", families[0], `"ipMask":true`)
	r := w.exec("veth-ptp", w.pluginEnv("ADD", "c1", pod.Path(), "eth0"), stdin)
	if r.exit != 0 || !strings.Contains(r.stderr, `\"ipMask\": unknown key; did you mean \"ipMasq\"?`) {
		t.Fatalf("exit %d, stderr %q", r.exit, r.stderr)
	}
	// STATUS, which containerd runs every few seconds, says it only at debug.
	if r := w.exec("veth-ptp", w.pluginEnv("STATUS", "", "", ""), stdin); r.exit != 0 || r.stderr != "" {
		t.Fatalf("STATUS: exit %d, stderr %q, want silence at the default level", r.exit, r.stderr)
	}
	if r := w.exec("veth-ptp", w.pluginEnv("DEL", "c1", pod.Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("DEL: %s", r.stdout)
	}
}

// TestForwardAcceptWithoutIptables: a host without the iptables binary has
// no iptables FORWARD policy to get past; ADD and CHECK with the default
// forwardAccept succeed there, with masquerade over netlink alone. (The
// plugin runs in a mount namespace of its own where every iptables binary
// is hidden.) Then iptables is there but the runtime gives the plugins a
// PATH without it: they find it in the system directories all the same.
// The next ADD writes the accept rules (the first ADD's record of what it
// found in place does not stand for it: it used to, until the ruleset
// changed), and the DEL of the last pod, through the same PATH, removes
// them.
func TestForwardAcceptWithoutIptables(t *testing.T) {
	w := newWorld(t)
	pod := w.sb.PodT(t, "pod")
	before := w.hostState(t)
	stdin := w.pluginStdin("1.1.0", "noipt", "veth-ptp", families[0], `"ipMasq":true`)
	noIptables := withoutIptables(t, "veth-ptp")
	env := func(cmd, id string, pod *nsutil.NS) []string {
		e := w.pluginEnv(cmd, id, pod.Path(), "eth0")
		for i, kv := range e {
			if strings.HasPrefix(kv, "PATH=") {
				e[i] = "PATH=/nonexistent"
			}
		}
		return e
	}
	r := w.execIn(noIptables, "veth-ptp", env("ADD", "c1", pod), stdin)
	if r.exit != 0 {
		t.Fatalf("ADD without iptables: %s %s", r.stdout, r.stderr)
	}
	if strings.Contains(w.hostState(t), "NETNS-CNI-FW") {
		t.Fatal("FORWARD accept rules written on a host without iptables")
	}
	check := strings.TrimSuffix(stdin, "}") + `,"prevResult":` + r.stdout + "}"
	if r := w.execIn(noIptables, "veth-ptp", env("CHECK", "c1", pod), check); r.exit != 0 {
		t.Fatalf("CHECK without iptables: %s", r.stdout)
	}
	pod2 := w.sb.PodT(t, "pod2")
	if r := w.exec("veth-ptp", env("ADD", "c2", pod2), stdin); r.exit != 0 {
		t.Fatalf("ADD with iptables off the PATH: %s", r.stdout)
	}
	if !strings.Contains(w.hostState(t), "NETNS-CNI-FW") {
		t.Fatalf("no FORWARD accept rules after an ADD on a host with iptables:\n%s", w.hostState(t))
	}
	for _, p := range []struct {
		id  string
		pod *nsutil.NS
	}{{"c2", pod2}, {"c1", pod}} {
		if r := w.exec("veth-ptp", env("DEL", p.id, p.pod), stdin); r.exit != 0 {
			t.Fatalf("DEL %s: %s", p.id, r.stdout)
		}
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// withoutIptables is a directory of stand-ins for the plugins named: each
// runs its plugin in a mount namespace of its own where every iptables
// and ip6tables binary is hidden (/dev/null bound over it: not
// executable), as on a host that has none. The machine's own files stay
// as they are.
func withoutIptables(t *testing.T, plugins ...string) string {
	dir := t.TempDir()
	for _, p := range plugins {
		script := `#!/bin/sh
exec /usr/bin/unshare -m /bin/sh -c 'for d in /usr/sbin /sbin /usr/local/sbin /usr/bin /bin; do
  for b in iptables ip6tables; do [ -e $d/$b ] && /usr/bin/mount --bind /dev/null $d/$b; done
done
exec "$0"' ` + filepath.Join(binDir, p) + "\n"
		if err := os.WriteFile(filepath.Join(dir, p), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSubnetEditedUnderLivePods: an operator changes a network's subnet
// while its pods run (a conflist edited, a node agent's new podCIDR).
// Under Docker's FORWARD DROP policy the pods of both subnets reach the
// outside, the new pod passes CHECK, and with the iptables backend the old
// subnet's pods still reach each other with their own addresses: the
// network's FORWARD accept chain and masquerade chain hold the rules of
// every subnet it had (they used to be rewritten for the new subnet alone,
// or left as they were: an accept chain with as many rules was taken for
// "in place"). The last DEL removes them all. (veth-ptp only: a bridge
// has one gateway address, and bridge-nat, like the reference, replaces it
// only with forceAddress, cutting the old subnet off by design.)
func TestSubnetEditedUnderLivePods(t *testing.T) {
	w := newWorld(t)
	w.outside(t)
	if err := w.inHost(func() error {
		return exec.Command("iptables", "-P", "FORWARD", "DROP").Run()
	}); err != nil {
		t.Fatal(err)
	}
	for n, tc := range []struct{ plugin, extra string }{
		{"veth-ptp", `"ipMasqBackend":"iptables"`},
		{"veth-ptp", `"ipMasqBackend":"nftables"`},
	} {
		backend := map[bool]string{true: "iptables", false: "nftables"}[strings.Contains(tc.extra, "iptables")]
		t.Run(tc.plugin+"/"+backend, func(t *testing.T) {
			before := w.hostState(t)
			conf := func(subnet string) *libcni.NetworkConfigList {
				return w.list("1.1.0", "edit-"+tc.plugin+backend, fmt.Sprintf(`{"type":%q,"ipMasq":true,%s,"ipam":{"type":"host-local","dataDir":%q,`+
					`"subnet":%q,"routes":[{"dst":"0.0.0.0/0"}]}}`, tc.plugin, tc.extra, filepath.Join(w.sb.Dir, "ipam"), subnet))
			}
			was := conf("10.40.0.0/24")
			pods := map[string]*nsutil.NS{}
			addrs := map[string]string{}
			add := func(list *libcni.NetworkConfigList, id string) {
				t.Helper()
				pods[id] = w.sb.PodT(t, fmt.Sprintf("%s%d", id, n))
				res, err := w.add(list, w.rt(id, pods[id], "eth0"))
				if err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
				addrs[id] = res.IPs[0].Address.IP.String()
			}
			add(was, "old1")
			add(was, "old2")
			serveSource(t, pods["old2"])
			now := conf("10.41.0.0/23") // a prefix off a byte boundary
			add(now, "new1")
			if err := w.check(now, w.rt("new1", pods["new1"], "eth0")); err != nil {
				t.Errorf("CHECK of the new subnet's pod: %v", err)
			}
			add(now, "new2") // an ADD once both subnets' rules are there changes nothing
			if err := w.check(was, w.rt("old1", pods["old1"], "eth0")); err != nil {
				t.Errorf("CHECK of the old subnet's pod, through the config it was made with: %v", err)
			}
			for _, id := range []string{"old1", "new1"} {
				if err := ping(t, pods[id], nstest.Outside4); err != nil {
					var rules []byte
					_ = w.inHost(func() error { rules, _ = exec.Command("iptables-save").CombinedOutput(); return nil })
					t.Errorf("%s (%s) cannot reach the outside through the DROP policy: %v\n%s", id, addrs[id], err, rules)
				}
			}
			if got, err := nstest.Fetch(pods["old1"], addrs["old2"]+":80"); err != nil || got != addrs["old1"] {
				t.Errorf("old2 sees old1 (%s) as %q (%v): pod-to-pod traffic of the old subnet masqueraded", addrs["old1"], got, err)
			}
			for _, id := range []string{"old1", "old2", "new1", "new2"} {
				if err := w.del(now, w.rt(id, pods[id], "eth0")); err != nil {
					t.Fatalf("DEL %s: %v", id, err)
				}
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestIptablesLegacyHost: on a host whose iptables is iptables-legacy
// (RHEL 7, older Ubuntu, many Docker hosts), whose rules netlink cannot
// read, the plugins run with every iptables the host has going to
// xtables-legacy-multi (a mount namespace of their own; every exec is
// logged). ADD, the DEL of a pod that is not the network's last, and the
// last DEL work for both masquerade backends, with port mappings and the
// FORWARD accept rules; the last DEL leaves no rule (it failed: legacy
// iptables fails the check before deleting a jump whose chain is gone);
// with the nftables backend a DEL that is not the last execs no iptables
// at all.
func TestIptablesLegacyHost(t *testing.T) {
	w := newWorld(t)
	// As Debian's update-alternatives sets a legacy host up: iptables and
	// ip6tables link, through /etc/alternatives, to the legacy binary
	// (here a shim that logs each exec and runs xtables-legacy-multi).
	legacy, log, alt := t.TempDir(), filepath.Join(t.TempDir(), "execs"), t.TempDir()
	shim := filepath.Join(legacy, "xtables-legacy-shim")
	if err := os.WriteFile(shim, []byte("#!/bin/bash\necho \"$0 $*\" >> "+log+"\nexec -a \"$(basename \"$0\")\" /usr/sbin/xtables-legacy-multi \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"iptables", "ip6tables"} {
		if err := os.Symlink(shim, filepath.Join(alt, name)); err != nil {
			t.Fatal(err)
		}
	}
	script := `#!/bin/sh
exec /usr/bin/unshare -m /bin/sh -c '/usr/bin/mount --bind ` + alt + ` /etc/alternatives && exec "$0"' ` + filepath.Join(binDir, "veth-ptp") + "\n"
	if err := os.WriteFile(filepath.Join(legacy, "veth-ptp"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rules := func() string {
		var b strings.Builder
		_ = w.inHost(func() error {
			for _, c := range []string{"iptables-legacy-save", "ip6tables-legacy-save"} {
				out, _ := exec.Command(c).CombinedOutput()
				b.Write(out)
			}
			out, _ := exec.Command("nft", "list", "ruleset").CombinedOutput()
			b.Write(out)
			return nil
		})
		return b.String()
	}
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			stdin := w.pluginStdin("1.1.0", "legacy-"+backend, "veth-ptp", families[2], capPorts+`,"ipMasq":true,"ipMasqBackend":"`+backend+`"`)
			withPorts := strings.TrimSuffix(stdin, "}") + `,"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}`
			pods := map[string]*nsutil.NS{}
			run := func(cmd, id, stdin string) {
				t.Helper()
				id += backend
				if pods[id] == nil {
					pods[id] = w.sb.PodT(t, id)
				}
				if r := w.execIn(legacy, "veth-ptp", w.pluginEnv(cmd, id, pods[id].Path(), "eth0"), stdin); r.exit != 0 {
					t.Fatalf("%s %s on an iptables-legacy host: %s %s", cmd, id, r.stdout, r.stderr)
				}
			}
			run("ADD", "a", withPorts)
			run("ADD", "b", stdin)
			if got := rules(); !strings.Contains(got, "NETNS-CNI-FW-") || !strings.Contains(got, "8080") {
				t.Fatalf("no FORWARD accept rules or forward after ADD:\n%s", got)
			}
			_ = os.Remove(log)
			run("DEL", "a", withPorts)
			if execs, _ := os.ReadFile(log); backend == "nftables" && len(execs) > 0 {
				t.Errorf("a DEL that is not the last exec'd iptables:\n%s", execs)
			}
			if strings.Contains(rules(), "8080") {
				t.Fatalf("a's forward left:\n%s", rules())
			}
			run("DEL", "b", stdin)
			if got := rules(); strings.Contains(got, "NETNS-CNI") || strings.Contains(got, "netns-cni") {
				t.Fatalf("the last DEL left:\n%s", got)
			}
		})
	}
}
