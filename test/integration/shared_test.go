package integration

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// TestNetworkSharedByBothPlugins: a network's masquerade rules belong to
// the network, not to the plugin that made them. Two configs share a name
// and ipMasq, one bridge-nat and one veth-ptp — what the node agent writes
// when its ConfigMap's plugin changes under live pods. Removing the
// veth-ptp pod, by DEL or by GC, must leave the rules the bridge-nat pod
// still needs; removing the last pod removes them.
func TestNetworkSharedByBothPlugins(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		for _, how := range []string{"DEL", "GC"} {
			t.Run(backend+"/"+how, func(t *testing.T) {
				w := newWorld(t)
				out := w.outside(t)
				before := w.hostState(t)
				masq := fmt.Sprintf(`"ipMasq":true,"ipMasqBackend":%q`, backend)
				conf := func(plugin, extra string) *libcni.NetworkConfigList {
					return w.parsed("1.1.0", "shared", w.ptpConf(plugin, families[0], masq+extra))
				}
				bridge, ptp := conf("bridge-nat", `,"bridge":"brs0","isGateway":true,"isDefaultGateway":true,"removeEmptyBridge":true`), conf("veth-ptp", "")
				podA, podB := w.sb.PodT(t, "a"), w.sb.PodT(t, "b")
				rtA, rtB := w.rt("pod-a", podA, "eth0"), w.rt("pod-b", podB, "eth0")
				if _, err := w.add(bridge, rtA); err != nil {
					t.Fatalf("ADD A (bridge-nat): %v", err)
				}
				if _, err := w.add(ptp, rtB); err != nil {
					t.Fatalf("ADD B (veth-ptp): %v", err)
				}
				rules := w.natRules(t)
				switch how {
				case "DEL":
					if err := w.del(ptp, rtB); err != nil {
						t.Fatalf("DEL B: %v", err)
					}
				case "GC":
					if err := w.gc(ptp, types.GCAttachment{ContainerID: "pod-a", IfName: "eth0"}); err != nil {
						t.Fatalf("GC keeping A: %v", err)
					}
				}
				if got := w.natRules(t); got != rules {
					t.Fatalf("%s of the veth-ptp pod changed the network's NAT rules from %d to %d while the bridge-nat pod lives", how, rules, got)
				}
				src, err := sourceSeen(t, podA, out, "192.0.2.2")
				if err != nil {
					t.Fatal(err)
				}
				if src != "192.0.2.1" {
					t.Fatalf("after %s of B, outside saw A's traffic from %s, want the host's 192.0.2.1", how, src)
				}
				if err := w.check(bridge, rtA); err != nil {
					t.Fatalf("CHECK A: %v", err)
				}
				if err := w.del(bridge, rtA); err != nil {
					t.Fatalf("DEL A: %v", err)
				}
				if how == "GC" {
					_ = w.del(ptp, rtB) // the runtime's cache entry
				}
				if after := w.settled(t, before); after != before {
					t.Fatalf("after the last pod:\n%s", stateDiff(before, after))
				}
			})
		}
	}
}

// TestDelThroughTheOtherPlugin: after a network's conflist switched from
// bridge-nat to veth-ptp under a live pod, the DEL of that pod comes
// through the veth-ptp config. It must find the port bridge-nat made,
// remove it and its MAC check before releasing the address, and leave
// nothing once GC through the bridge-nat config removes the empty bridge.
func TestDelThroughTheOtherPlugin(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	conf := func(plugin, extra string) *libcni.NetworkConfigList {
		return w.parsed("1.1.0", "switched", w.ptpConf(plugin, families[2], `"ipMasq":true`+extra))
	}
	bridge, ptp := conf("bridge-nat", `,"bridge":"brsw0","isGateway":true,"macspoofchk":true,"removeEmptyBridge":true`), conf("veth-ptp", "")
	pod := w.sb.PodT(t, "a")
	rt := w.rt("pod-a", pod, "eth0")
	if _, err := w.add(bridge, rt); err != nil {
		t.Fatal(err)
	}
	if err := w.del(ptp, rt); err != nil {
		t.Fatalf("DEL through veth-ptp: %v", err)
	}
	// The container end can outlive its host end's delete by a moment.
	for deadline := time.Now().Add(5 * time.Second); len(linkNames(t, pod)) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pod keeps %v: the bridge-nat port was not removed", linkNames(t, pod))
		}
	}
	if err := w.gc(bridge); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestLastTwoDelsAtOnce: when the network's last two attachments are
// DELed at the same moment, one of the two DELs removes the network's
// rules. Each DEL asks the store whether another attachment is left; when
// both asked before either had released its addresses, each saw the other
// and the masquerade, FORWARD and port-mapping rules stayed with no pod
// (seen as a leak after TestBridge250Containers' parallel DELs). Rounds
// of two concurrent DELs, for both plugins, with every per-network rule
// on.
func TestLastTwoDelsAtOnce(t *testing.T) {
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		t.Run(plugin, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			extra := `"ipMasq":true,"capabilities":{"portMappings":true}`
			if plugin == "bridge-nat" {
				extra += `,"bridge":"brl0","isGateway":true,"removeEmptyBridge":true`
			}
			list := w.list("1.1.0", "last", w.ptpConf(plugin, families[0], extra))
			pods := [2]*nsutil.NS{w.sb.PodT(t, "a"), w.sb.PodT(t, "b")}
			for round := range 6 {
				var rts [2]*libcni.RuntimeConf
				for i, pod := range pods {
					rts[i] = w.rt(fmt.Sprintf("r%d-%d", round, i), pod, "eth0")
					rts[i].CapabilityArgs = map[string]any{"portMappings": []map[string]any{
						{"hostPort": 18080 + i, "containerPort": 80, "protocol": "tcp"}}}
					if _, err := w.add(list, rts[i]); err != nil {
						t.Fatalf("round %d: ADD %d: %v", round, i, err)
					}
				}
				var wg sync.WaitGroup
				for i := range pods {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if err := w.del(list, rts[i]); err != nil {
							t.Errorf("round %d: DEL %d: %v", round, i, err)
						}
					}()
				}
				wg.Wait()
				if after := w.settled(t, before); after != before {
					t.Fatalf("round %d: after both DELs:\n%s", round, stateDiff(before, after))
				}
			}
		})
	}
}

// TestPodOnTwoNetworks: a pod on two networks whose IPAM both give a
// default route (podman with two networks, a secondary network), one
// veth-ptp on eth0 and one bridge-nat on eth1. The second ADD adds its
// default routes beside the first's, as the reference does, never in
// their place: both networks pass CHECK, and the DEL of the second leaves
// the pod with the first's default routes (it used to leave none: the
// second ADD had replaced them).
func TestPodOnTwoNetworks(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	conf := func(typ, v4, v6, extra string) string {
		return fmt.Sprintf(`{"type":%q%s,"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":"%s.0/24"}],[{"subnet":"%s/64"}]],`+
			`"routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}]}}`, typ, extra, filepath.Join(w.sb.Dir, "ipam"), v4, v6)
	}
	first := w.list("1.1.0", "two-first", conf("veth-ptp", "10.20.0", "fd20::", ""))
	second := w.list("1.1.0", "two-second", conf("bridge-nat", "10.21.0", "fd21::", `,"bridge":"brtwo","isGateway":true,"removeEmptyBridge":true`))
	pod := w.sb.PodT(t, "pod")
	rt0, rt1 := w.rt("c", pod, "eth0"), w.rt("c", pod, "eth1")
	if _, err := w.add(first, rt0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.add(second, rt1); err != nil {
		t.Fatalf("ADD of the second network: %v", err)
	}
	defaults := func() string {
		var b strings.Builder
		_ = pod.Do(func() error {
			for _, fam := range []string{"-4", "-6"} {
				out, _ := exec.Command("ip", fam, "route", "show", "default").CombinedOutput()
				b.Write(out)
			}
			return nil
		})
		return b.String()
	}
	both := defaults()
	for _, want := range []string{"via 10.20.0.1 dev eth0", "via 10.21.0.1 dev eth1", "via fd20::1 dev eth0", "via fd21::1 dev eth1"} {
		if !strings.Contains(both, want) {
			t.Fatalf("default routes with both networks lack %q:\n%s", want, both)
		}
	}
	for _, c := range []struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}{{first, rt0}, {second, rt1}} {
		if err := w.check(c.list, c.rt); err != nil {
			t.Fatalf("CHECK of %s with both networks: %v", c.list.Name, err)
		}
	}
	if err := w.del(second, rt1); err != nil {
		t.Fatal(err)
	}
	left := defaults()
	for _, want := range []string{"default via 10.20.0.1 dev eth0", "default via fd20::1 dev eth0"} {
		if !strings.Contains(left, want) {
			t.Fatalf("after the second network's DEL the pod lacks %q:\n%s", want, left)
		}
	}
	if err := w.check(first, rt0); err != nil {
		t.Fatalf("CHECK of the first network after the second's DEL: %v", err)
	}
	if err := w.del(first, rt0); err != nil {
		t.Fatal(err)
	}
	if got := linkNames(t, pod); len(got) != 1 {
		t.Fatalf("pod left with %v", got)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestRouteAttributes: a route of ipam.routes keeps its table, priority
// (metric), mtu and advmss (spec 1.1.0, section 5; the reference's
// ConfigureIface sets table, priority and scope), in the kernel and in the
// result, IPv4 and IPv6, and CHECK looks for it in its table with its
// metric. A default route in another table leaves bridge-nat's
// isDefaultGateway its own in the main table.
func TestRouteAttributes(t *testing.T) {
	for _, tc := range []struct {
		name, plugin, extra string
		mainDefault         bool
	}{
		{"veth-ptp", "veth-ptp", "", false},
		{"bridge-nat", "bridge-nat", `"bridge":"brr0","isGateway":true,"removeEmptyBridge":true,`, false},
		{"bridge-nat/isDefaultGateway", "bridge-nat", `"bridge":"brr0","isDefaultGateway":true,"removeEmptyBridge":true,`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			conf := fmt.Sprintf(`{"type":%q,%s"ipam":{"type":"host-local","dataDir":%q,
				"ranges":[[{"subnet":"10.11.0.0/24"}],[{"subnet":"fd11::/64"}]],"routes":[
				{"dst":"0.0.0.0/0","table":200,"priority":100},
				{"dst":"::/0","table":200},
				{"dst":"192.0.2.0/24","priority":50},
				{"dst":"198.51.100.0/24","mtu":1400,"advmss":1360}]}}`, tc.plugin, tc.extra, filepath.Join(w.sb.Dir, "ipam"))
			list := w.list("1.1.0", "rattr", conf)
			pod := w.sb.PodT(t, "p")
			rt := w.rt("c-rattr", pod, "eth0")
			res, err := w.add(list, rt)
			if err != nil {
				t.Fatal(err)
			}
			show := func(family string, args ...string) string {
				var out []byte
				_ = pod.Do(func() error {
					out, err = exec.Command("ip", append([]string{family, "route", "show"}, args...)...).CombinedOutput()
					return nil
				})
				if err != nil {
					t.Fatalf("ip route: %v %s", err, out)
				}
				return string(out)
			}
			main4 := show("-4")
			for _, want := range []string{"192.0.2.0/24 via 10.11.0.1 dev eth0 metric 50", "198.51.100.0/24 via 10.11.0.1 dev eth0 mtu 1400 advmss 1360"} {
				if !strings.Contains(main4, want) {
					t.Errorf("main table lacks %q:\n%s", want, main4)
				}
			}
			if got := strings.Contains(main4, "default via 10.11.0.1 dev eth0"); got != tc.mainDefault {
				t.Errorf("main table has a default route: %v, want %v:\n%s", got, tc.mainDefault, main4)
			}
			if got := show("-4", "table", "200"); !strings.Contains(got, "default via 10.11.0.1 dev eth0 metric 100") {
				t.Errorf("table 200: %q, want the IPv4 default route with metric 100", got)
			}
			if got := show("-6", "table", "200"); !strings.Contains(got, "default via fd11::1 dev eth0") {
				t.Errorf("table 200, IPv6: %q, want the default route", got)
			}
			r := res.Routes
			if len(r) < 4 || r[0].Table == nil || *r[0].Table != 200 || r[0].Priority != 100 || r[1].Table == nil ||
				r[2].Priority != 50 || r[3].MTU != 1400 || r[3].AdvMSS != 1360 {
				t.Errorf("result routes lost their attributes: %v", r)
			}
			if err := w.check(list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			_ = pod.Do(func() error {
				return exec.Command("ip", "route", "change", "192.0.2.0/24", "via", "10.11.0.1", "metric", "60").Run()
			})
			_ = pod.Do(func() error { return exec.Command("ip", "route", "del", "192.0.2.0/24", "metric", "50").Run() })
			if err := w.check(list, rt); err == nil || !strings.Contains(err.Error(), "metric 50") {
				t.Fatalf("CHECK with the route's metric changed to 60: %v, want an error naming metric 50", err)
			}
			_ = pod.Do(func() error {
				return exec.Command("ip", "route", "add", "192.0.2.0/24", "via", "10.11.0.1", "metric", "50").Run()
			})
			_ = pod.Do(func() error { return exec.Command("ip", "-6", "route", "del", "default", "table", "200").Run() })
			if err := w.check(list, rt); err == nil || !strings.Contains(err.Error(), "table 200") {
				t.Fatalf("CHECK with the IPv6 table-200 route gone: %v, want an error naming table 200", err)
			}
			if err := w.del(list, rt); err != nil {
				t.Fatal(err)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("host changed:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestDelOfAnotherNetworkOnATakenIfname: a container on network A with
// eth0 gets an ADD of network B with eth0 too (a runtime or operator
// mistake). B's ADD fails with code 4, and the runtime then sends B's DEL
// for that container and ifname, as the spec asks after a failed ADD. The
// host end's name comes from container ID and ifname, so B's DEL found A's
// link and deleted it: the pod lost its network. Now it stays, whichever
// plugin made A's attachment — either of ours, or the reference ptp.
func TestDelOfAnotherNetworkOnATakenIfname(t *testing.T) {
	for _, c := range []struct{ first, dir, second string }{
		{"veth-ptp", binDir, "veth-ptp"},
		{"bridge-nat", binDir, "veth-ptp"},
		{"veth-ptp", binDir, "bridge-nat"},
		{"ptp", upstreamDir, "veth-ptp"},
		{"ptp", upstreamDir, "bridge-nat"},
	} {
		t.Run(c.first+"-then-"+c.second, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			conf := func(name, plugin, subnet, extra string) *libcni.NetworkConfigList {
				fam := family{"v4", fmt.Sprintf(`[[{"subnet":%q}]]`, subnet), true, false}
				return w.parsed("1.0.0", name, w.ptpConf(plugin, fam, `"ipMasq":true`+extra))
			}
			extra := func(plugin, bridge string) string {
				if plugin == "bridge-nat" {
					return fmt.Sprintf(`,"bridge":%q,"isGateway":true,"removeEmptyBridge":true`, bridge)
				}
				return ""
			}
			first, second := conf("first", c.first, "10.10.0.0/24", extra(c.first, "brfirst")), conf("second", c.second, "10.11.0.0/24", extra(c.second, "brsecond"))
			firstCNI := libcni.NewCNIConfigWithCacheDir([]string{c.dir}, w.cacheDir, nil)
			pod := w.sb.PodT(t, "a")
			rt := w.rt("pod-a", pod, "eth0")
			if err := w.inHost(func() error { _, err := firstCNI.AddNetworkList(context.Background(), first, rt); return err }); err != nil {
				t.Fatalf("ADD of the first network: %v", err)
			}
			_, err := w.add(second, rt)
			var cniErr *types.Error
			if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidEnvironmentVariables {
				t.Fatalf("ADD of the second network on the taken eth0: %v, want code 4", err)
			}
			if err := w.del(second, rt); err != nil {
				t.Fatalf("DEL of the second network after its failed ADD: %v", err)
			}
			if err := ping(t, pod, "10.10.0.1"); err != nil {
				t.Fatalf("after the second network's DEL the pod no longer reaches the first network's gateway: %v (links %v)", err, linkNames(t, pod))
			}
			if err := w.inHost(func() error { return firstCNI.CheckNetworkList(context.Background(), first, rt) }); err != nil {
				t.Fatalf("CHECK of the first network after the second's DEL: %v", err)
			}
			if err := w.inHost(func() error { return firstCNI.DelNetworkList(context.Background(), first, rt) }); err != nil {
				t.Fatalf("DEL of the first network: %v", err)
			}
			if c.first == "bridge-nat" {
				if err := w.gc(first); err != nil { // the empty bridge
					t.Fatal(err)
				}
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestTwoNetworksWithOneSubnet: two veth-ptp networks hand out the same
// subnet from stores of their own, so a second network's pod gets the
// address a first network's pod has. Its ADD replaced the host's route to
// that address and cut the first pod off (for good once the second was
// DELed). Now the ADD fails, code 7 naming the first pod's link, and
// leaves the first pod as it was.
func TestTwoNetworksWithOneSubnet(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	conf := func(name string) *libcni.NetworkConfigList {
		return w.parsed("1.0.0", name, w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	}
	first, second := conf("one"), conf("other")
	podA, podB := w.sb.PodT(t, "a"), w.sb.PodT(t, "b")
	rtA, rtB := w.rt("pod-a", podA, "eth0"), w.rt("pod-b", podB, "eth0")
	if _, err := w.add(first, rtA); err != nil {
		t.Fatal(err)
	}
	_, err := w.add(second, rtB)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidNetworkConfig || !strings.Contains(cniErr.Msg, w.netName("one")) {
		t.Fatalf("ADD of the other network's pod on the same address: %v, want code 7 naming network %s", err, w.netName("one"))
	}
	if err := w.del(second, rtB); err != nil {
		t.Fatal(err)
	}
	for _, gw := range []string{"10.10.0.1", "fd10::1"} {
		if err := ping(t, podA, gw); err != nil {
			t.Errorf("the first pod no longer reaches %s: %v", gw, err)
		}
	}
	if err := w.check(first, rtA); err != nil {
		t.Fatalf("CHECK of the first pod: %v", err)
	}
	if err := w.del(first, rtA); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestOneNetworkTwiceInAPod: a container attached twice to one veth-ptp
// network (eth0 and eth5: Multus can ask for it). Both interfaces have
// the same gateway; the second ADD replaced eth0's routes to it and to the
// subnet, so CHECK of eth0 failed and, after eth5's DEL, eth0 had no IPv6
// route left. Routes now go beside those the container has (README).
func TestOneNetworkTwiceInAPod(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.parsed("1.0.0", "twice", w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	pod := w.sb.PodT(t, "a")
	rt0, rt5 := w.rt("pod-a", pod, "eth0"), w.rt("pod-a", pod, "eth5")
	for _, rt := range []*libcni.RuntimeConf{rt0, rt5} {
		if _, err := w.add(list, rt); err != nil {
			t.Fatalf("ADD %s: %v", rt.IfName, err)
		}
	}
	for _, rt := range []*libcni.RuntimeConf{rt0, rt5} {
		if err := w.check(list, rt); err != nil {
			t.Errorf("CHECK %s with both attached: %v", rt.IfName, err)
		}
	}
	if err := w.del(list, rt5); err != nil {
		t.Fatal(err)
	}
	if err := w.check(list, rt0); err != nil {
		t.Errorf("CHECK eth0 after eth5's DEL: %v", err)
	}
	for _, gw := range []string{"10.10.0.1", "fd10::1"} {
		if err := ping(t, pod, gw); err != nil {
			t.Errorf("after eth5's DEL the pod no longer reaches %s: %v", gw, err)
		}
	}
	if err := w.del(list, rt0); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestOneContainerIDInTwoNamespaces: the host end's name comes from the
// container ID and ifname, so the same pair in another namespace on
// another network cannot be attached: code 4 (it was 999 "link already
// exists"), naming the other attachment, and the DEL after it leaves the
// first pod whole.
func TestOneContainerIDInTwoNamespaces(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	conf := func(name, subnet string) *libcni.NetworkConfigList {
		fam := family{"v4", fmt.Sprintf(`[[{"subnet":%q}]]`, subnet), true, false}
		return w.parsed("1.0.0", name, w.ptpConf("veth-ptp", fam, ""))
	}
	first, second := conf("first", "10.10.0.0/24"), conf("second", "10.11.0.0/24")
	podA, podB := w.sb.PodT(t, "a"), w.sb.PodT(t, "b")
	rtA, rtB := w.rt("same-id", podA, "eth0"), w.rt("same-id", podB, "eth0")
	if _, err := w.add(first, rtA); err != nil {
		t.Fatal(err)
	}
	_, err := w.add(second, rtB)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(cniErr.Msg, w.netName("first")) {
		t.Fatalf("ADD of the same container ID and ifname in another namespace: %v, want code 4 naming network %s", err, w.netName("first"))
	}
	if err := w.del(second, rtB); err != nil {
		t.Fatal(err)
	}
	if err := ping(t, podA, "10.10.0.1"); err != nil {
		t.Fatalf("the first pod no longer reaches its gateway: %v", err)
	}
	if err := w.del(first, rtA); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}
