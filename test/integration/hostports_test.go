package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// capPorts declares the portMappings capability, so libcni passes a
// runtime's mappings to the plugin in runtimeConfig.
const capPorts = `"capabilities":{"portMappings":true}`

// withPorts is rt with port mappings as CRI, podman and nerdctl pass them.
func withPorts(rt *libcni.RuntimeConf, ms ...map[string]any) *libcni.RuntimeConf {
	rt.CapabilityArgs = map[string]any{"portMappings": ms}
	return rt
}

func tcpPort(host, cont int) map[string]any {
	return map[string]any{"hostPort": host, "containerPort": cont, "protocol": "tcp"}
}

func udpPort(host, cont int) map[string]any {
	return map[string]any{"hostPort": host, "containerPort": cont, "protocol": "udp"}
}

// serveSource answers on port 80 of pod with the client's address as seen.
func serveSource(t *testing.T, pod *nsutil.NS) {
	t.Helper()
	srv, err := nstest.ServeSource(pod, 80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
}

// answers asks addr over proto from ns and returns the answer.
func answers(ns *nsutil.NS, proto, addr string) (string, error) {
	if proto == "udp" {
		return nstest.AskUDP(ns, addr)
	}
	return nstest.Fetch(ns, addr)
}

func wantAnswer(t *testing.T, ns *nsutil.NS, proto, addr, want string) {
	t.Helper()
	got, err := answers(ns, proto, addr)
	if err != nil || want != "*" && got != want || got == "" {
		t.Errorf("%s %s: answer %q, %v; want %q", proto, addr, got, err, want)
	}
}

func wantNoAnswer(t *testing.T, ns *nsutil.NS, proto, addr, why string) {
	t.Helper()
	if got, err := answers(ns, proto, addr); err == nil {
		t.Errorf("%s %s answered %q: %s", proto, addr, got, why)
	}
}

// TestPortMappings: the portMappings capability, built into both plugins
// and both backends, as a runtime uses it through libcni: forwards from
// outside (IPv4, IPv6, TCP, UDP), from the host itself and its loopback,
// and from the container to itself; CHECK; a host port another container
// holds refused with nothing left behind; DEL without the mappings; GC.
func TestPortMappings(t *testing.T) {
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		for _, backend := range []string{"nftables", "iptables"} {
			t.Run(plugin+"/"+backend, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				out := w.outside(t)
				before := w.hostState(t)
				extra := capPorts + fmt.Sprintf(`,"ipMasq":true,"ipMasqBackend":%q`, backend)
				if plugin == "bridge-nat" {
					// hairpinMode: with br_netfilter, a container's packets to
					// its own mapped port come back through its own port.
					extra += `,"isGateway":true,"hairpinMode":true,"removeEmptyBridge":true`
				}
				list := w.list("1.1.0", "ports", w.ptpConf(plugin, families[2], extra))
				a, b := w.sb.PodT(t, "a"), w.sb.PodT(t, "b")
				serveSource(t, a)
				serveSource(t, b)
				rtA := withPorts(w.rt("a", a, "eth0"), tcpPort(8080, 80), udpPort(8053, 80))
				if _, err := w.add(list, rtA); err != nil {
					t.Fatalf("ADD a: %v", err)
				}
				wantAnswer(t, out, "tcp", "192.0.2.1:8080", "192.0.2.2")
				wantAnswer(t, out, "tcp", "[2001:db8:ff::1]:8080", "2001:db8:ff::2")
				wantAnswer(t, out, "udp", "192.0.2.1:8053", "192.0.2.2")
				wantAnswer(t, out, "udp", "[2001:db8:ff::1]:8053", "2001:db8:ff::2")
				wantAnswer(t, w.sb.Host, "tcp", "192.0.2.1:8080", "192.0.2.1")
				wantAnswer(t, w.sb.Host, "tcp", "127.0.0.1:8080", "*") // masqueraded: not 127.0.0.1
				wantAnswer(t, a, "tcp", "192.0.2.1:8080", "*")         // hairpin
				if err := w.check(list, rtA); err != nil {
					t.Errorf("CHECK: %v", err)
				}

				// b asks for a's port: refused with code 7 naming a, nothing of b left.
				beforeB := w.hostState(t)
				_, err := w.add(list, withPorts(w.rt("b", b, "eth0"), tcpPort(8080, 80)))
				var e *types.Error
				if !asCNIError(err, &e) || e.Code != types.ErrInvalidNetworkConfig || !strings.Contains(e.Msg, "a/eth0") {
					t.Fatalf("ADD of a taken host port: %v; want code 7 naming a/eth0", err)
				}
				if after := w.settled(t, beforeB); after != beforeB {
					t.Fatalf("the refused ADD left:\n%s", stateDiff(beforeB, after))
				}
				rtB := withPorts(w.rt("b", b, "eth0"), tcpPort(8081, 80))
				if _, err := w.add(list, rtB); err != nil {
					t.Fatalf("ADD b: %v", err)
				}
				wantAnswer(t, out, "tcp", "192.0.2.1:8081", "192.0.2.2")
				// Someone deletes a's forward: CHECK says so.
				w.tamper(t, backend, w.netName("ports"))
				if err := w.check(list, rtA); err == nil || !strings.Contains(err.Error(), "8080") {
					t.Errorf("CHECK after a's forward went: %v", err)
				}

				// DEL of a without its mappings (a runtime that lost them)
				// still removes them; b's stay.
				if err := w.del(list, w.rt("a", a, "eth0")); err != nil {
					t.Fatalf("DEL a: %v", err)
				}
				wantNoAnswer(t, out, "tcp", "192.0.2.1:8053", "a is gone")
				wantAnswer(t, out, "tcp", "192.0.2.1:8081", "192.0.2.2")
				// GC keeping nothing takes b's.
				if err := w.gc(list); err != nil {
					t.Fatalf("GC: %v", err)
				}
				wantNoAnswer(t, out, "tcp", "192.0.2.1:8081", "b was collected")
				if after := w.settled(t, before); after != before {
					t.Fatalf("DEL and GC left:\n%s", stateDiff(before, after))
				}
			})
		}
	}
}

// tamper deletes the network's IPv4 forward of host port 8080 behind the
// plugin's back.
func (w *world) tamper(t *testing.T, backend, network string) {
	t.Helper()
	cmds := [][]string{{"nft", "delete", "element", "inet", "netns-cni-" + network, "hostports-ipv4", "{ tcp . 8080 }"}}
	if backend == "iptables" {
		cmds = nil
		_ = w.inHost(func() error {
			out, _ := exec.Command("iptables", "-t", "nat", "-S").Output()
			for _, l := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(l, "-A NETNS-CNI-HP-") && strings.Contains(l, "--dport 8080 ") {
					rule := strings.Fields(strings.ReplaceAll(strings.TrimPrefix(l, "-A "), `"`, ""))
					cmds = append(cmds, append([]string{"iptables", "-t", "nat", "-D"}, rule...))
				}
			}
			return nil
		})
	}
	_ = w.inHost(func() error {
		for _, c := range cmds {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", c, err, out)
			}
		}
		return nil
	})
	if len(cmds) == 0 {
		t.Fatal("no forward of port 8080 to delete")
	}
}

// TestPortMappingsFlushStaleUDPFlows: a UDP client that kept sending to a
// host port before it was mapped has a conntrack entry that would carry
// its datagrams past the new forward; ADD deletes it. DEL deletes the
// entries of the forward it removes, so the next container mapped on the
// port gets the flow.
func TestPortMappingsFlushStaleUDPFlows(t *testing.T) {
	w := newWorld(t)
	out := w.outside(t)
	list := w.list("1.1.0", "udp", w.ptpConf("veth-ptp", families[0], capPorts+`,"ipMasq":true`))
	// A first container without mappings: the network's NAT rules make
	// the host track connections.
	if _, err := w.add(list, w.rt("first", w.sb.PodT(t, "first"), "eth0")); err != nil {
		t.Fatal(err)
	}
	// The client, from one fixed port, like a DNS or game client that keeps going.
	var conn *net.UDPConn
	if err := out.Do(func() (err error) {
		conn, err = net.DialUDP("udp4", &net.UDPAddr{Port: 40000}, &net.UDPAddr{IP: net.ParseIP("192.0.2.1"), Port: 8053})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ask := func() (string, error) {
		if _, err := conn.Write([]byte("?")); err != nil {
			return "", err
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		return string(buf[:n]), err
	}
	_, _ = ask() // nothing listens: the host tracks an unanswered flow
	if n := w.flowsTo(t, 8053); n != 1 {
		t.Fatalf("%d conntrack entries for port 8053 before the mapping, want 1", n)
	}
	for _, id := range []string{"a", "b"} {
		pod := w.sb.PodT(t, id)
		srv, err := nstest.ServeSource(pod, 53)
		if err != nil {
			t.Fatal(err)
		}
		rt := withPorts(w.rt(id, pod, "eth0"), udpPort(8053, 53))
		if _, err := w.add(list, rt); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		if got, err := ask(); err != nil || got != "192.0.2.2" {
			t.Errorf("the client's flow after %s was mapped: %q, %v", id, got, err)
		}
		_ = srv.Close()
		if err := w.del(list, rt); err != nil {
			t.Fatal(err)
		}
		if n := w.flowsTo(t, 8053); n != 0 {
			t.Errorf("%d conntrack entries for port 8053 after DEL of %s, want 0", n, id)
		}
	}
}

// flowsTo counts the fake host's conntrack entries of UDP flows to port.
func (w *world) flowsTo(t *testing.T, port uint16) int {
	t.Helper()
	n := 0
	_ = w.inHost(func() error {
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if f.Forward.Protocol == unix.IPPROTO_UDP && f.Forward.DstPort == port {
				n++
			}
		}
		return nil
	})
	return n
}

// TestReferencePortmapInTheChain: a conflist that still chains the
// reference portmap keeps working as before. Our plugin is not given the
// capability there, so it maps nothing and nothing is mapped twice.
func TestReferencePortmapInTheChain(t *testing.T) {
	w := newWorld(t)
	out := w.outside(t)
	// Debian's portmap speaks cniVersion 1.0.0 at most.
	list := w.list("1.0.0", "refpm", w.ptpConf("veth-ptp", families[0], `"ipMasq":true`),
		`{"type":"portmap",`+capPorts+`}`)
	pod := w.sb.PodT(t, "a")
	serveSource(t, pod)
	rt := withPorts(w.rt("a", pod, "eth0"), tcpPort(8080, 80))
	if _, err := w.add(list, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	wantAnswer(t, out, "tcp", "192.0.2.1:8080", "192.0.2.2")
	_ = w.inHost(func() error {
		got, _ := exec.Command("nft", "list", "table", "inet", "netns-cni-"+w.netName("refpm")).CombinedOutput()
		if strings.Contains(string(got), "8080") {
			t.Errorf("our plugin mapped the port the chained portmap maps:\n%s", got)
		}
		return nil
	})
	if err := w.del(list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	wantNoAnswer(t, out, "tcp", "192.0.2.1:8080", "DEL removed the mapping")
}

// TestHostPortRaceAcrossNetworks: two networks' ADDs asking for one host
// port at the same moment: exactly one gets it, the other is refused
// (code 7), every time. (Each network's lock alone let both find the port
// free: both forwarded it, and one pod's port was silently dead.)
func TestHostPortRaceAcrossNetworks(t *testing.T) {
	for _, backends := range [][2]string{{"nftables", "nftables"}, {"iptables", "iptables"}, {"nftables", "iptables"}} {
		t.Run(backends[0]+"-"+backends[1], func(t *testing.T) { hostPortRace(t, backends) })
	}
}

func hostPortRace(t *testing.T, backends [2]string) {
	w := newWorld(t)
	var lists []*libcni.NetworkConfigList
	for i, subnet := range []string{"10.31.0.0/24", "10.32.0.0/24"} {
		lists = append(lists, w.confList(fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[{"type":"veth-ptp",%s,"ipMasqBackend":%q,"ipam":{"type":"host-local","dataDir":%q,"subnet":%q}}]}`,
			w.netName(fmt.Sprintf("race%d", i)), capPorts, backends[i], filepath.Join(w.sb.Dir, "ipam"), subnet)))
	}
	pods := []*nsutil.NS{w.sb.PodT(t, "a"), w.sb.PodT(t, "b")}
	for round := range 10 {
		rts := make([]*libcni.RuntimeConf, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			rts[i] = withPorts(w.rt(fmt.Sprintf("race-%d-%d", round, i), pods[i], "eth0"), tcpPort(9090, 80))
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = w.add(lists[i], rts[i])
			}()
		}
		wg.Wait()
		refused := 0
		for _, err := range errs {
			var e *types.Error
			if errors.As(err, &e) && e.Code == types.ErrInvalidNetworkConfig && strings.Contains(e.Msg, "9090") {
				refused++
			} else if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if refused != 1 {
			t.Fatalf("round %d: %d of the two ADDs refused, want exactly 1: both networks forward host port 9090", round, refused)
		}
		for i := range 2 {
			if err := w.del(lists[i], rts[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestStaleForwardInTheOtherBackend: a pod gone without its DEL left a
// forward in nftables; the operator switched ipMasqBackend to iptables; a
// new pod asks for the same port. The ADD takes the port over and the old
// forward goes (it used to stay, ahead of the new one: the port led to
// the dead pod's address).
func TestStaleForwardInTheOtherBackend(t *testing.T) {
	w := newWorld(t)
	out := w.outside(t)
	conf := func(backend string) *libcni.NetworkConfigList {
		return w.list("1.1.0", "stale", w.ptpConf("veth-ptp", families[0], capPorts+fmt.Sprintf(`,"ipMasq":true,"ipMasqBackend":%q`, backend)))
	}
	a := w.sb.PodT(t, "a")
	resA, err := w.add(conf("nftables"), withPorts(w.rt("stale-a", a, "eth0"), tcpPort(8080, 80)))
	if err != nil {
		t.Fatal(err)
	}
	// a dies without a DEL: its address is no longer reserved to it, its link is gone.
	store := filepath.Join(w.sb.Dir, "ipam", conf("nftables").Name)
	if err := os.Remove(filepath.Join(store, resA.IPs[0].Address.IP.String())); err != nil {
		t.Fatal(err)
	}
	if err := w.inHost(func() error { return exec.Command("ip", "link", "del", resA.Interfaces[0].Name).Run() }); err != nil {
		t.Fatal(err)
	}
	b := w.sb.PodT(t, "b")
	serveSource(t, b)
	rtB := withPorts(w.rt("stale-b", b, "eth0"), tcpPort(8080, 80))
	if _, err := w.add(conf("iptables"), rtB); err != nil {
		t.Fatalf("ADD of b: %v", err)
	}
	wantAnswer(t, out, "tcp", "192.0.2.1:8080", "192.0.2.2")
	if n := strings.Count(w.hostState(t), "stale-a"); n != 0 {
		t.Errorf("%d lines of the dead pod's state left:\n%s", n, w.hostState(t))
	}
	if err := w.del(conf("iptables"), rtB); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationFromReferencePortmap: a node whose conflist moves from the
// reference ptp with portmap to veth-ptp with the built-in mappings, with
// a mapped pod live. The pod's DEL goes through the new conflist — no
// portmap runs — and still removes portmap's forwards (its iptables chain,
// or its nftables rules); a new pod then maps the same port. For Debian's
// 1.1.1 (iptables) and upstream v1.10.0 (both backends).
func TestMigrationFromReferencePortmap(t *testing.T) {
	for _, ref := range []struct {
		name, dir, version, backend string
	}{
		{"debian-1.1.1", refDir, "1.0.0", ""},
		{"upstream-v1.10.0/iptables", upstreamDir, "1.1.0", `,"backend":"iptables"`},
		{"upstream-v1.10.0/nftables", upstreamDir, "1.1.0", `,"backend":"nftables"`},
	} {
		t.Run(ref.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t)
			out := w.outside(t)
			name := w.netName("pmig")
			conf := func(plugins ...string) *libcni.NetworkConfigList {
				list, err := libcni.ConfListFromBytes([]byte(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, ref.version, name, strings.Join(plugins, ","))))
				if err != nil {
					t.Fatal(err)
				}
				return list
			}
			old := conf(w.ptpConf("ptp", families[0], `"ipMasq":true`), `{"type":"portmap",`+capPorts+ref.backend+`}`)
			ours := conf(w.ptpConf("veth-ptp", families[0], capPorts+`,"ipMasq":true`))
			refCNI := libcni.NewCNIConfigWithCacheDir([]string{ref.dir}, w.cacheDir, nil)

			a := w.sb.PodT(t, "a")
			serveSource(t, a)
			rtA := withPorts(w.rt("mig-a", a, "eth0"), tcpPort(8080, 80))
			if err := w.inHost(func() error { _, err := refCNI.AddNetworkList(context.Background(), old, rtA); return err }); err != nil {
				t.Fatalf("reference ADD: %v", err)
			}
			wantAnswer(t, out, "tcp", "192.0.2.1:8080", "192.0.2.2")
			if n := w.portmapLeft(t, "mig-a"); n == 0 {
				t.Fatal("the reference portmap made no rule the test can see")
			}
			if err := w.del(ours, rtA); err != nil {
				t.Fatalf("DEL through the new conflist: %v", err)
			}
			wantNoAnswer(t, out, "tcp", "192.0.2.1:8080", "the pod is gone")
			if n := w.portmapLeft(t, "mig-a"); n != 0 {
				t.Errorf("%d rules of the reference portmap left for the deleted pod", n)
			}
			// Without the mappings — a DEL by hand, or netns-cni repair —
			// the forwards go too: of a pod the reference made, and of one
			// veth-ptp made with the reference portmap chained after it.
			// (They used to stay, the port forwarded to a gone address.)
			mixed := conf(w.ptpConf("veth-ptp", families[0], `"ipMasq":true`), `{"type":"portmap",`+capPorts+ref.backend+`}`)
			mixedCNI := libcni.NewCNIConfigWithCacheDir([]string{binDir, ref.dir}, w.cacheDir, nil)
			for i, made := range []struct {
				cni  *libcni.CNIConfig
				list *libcni.NetworkConfigList
			}{{refCNI, old}, {mixedCNI, mixed}} {
				id := fmt.Sprintf("mig-bare-%d", i)
				rt := w.rt(id, w.sb.PodT(t, id), "eth0")
				if err := w.inHost(func() error {
					_, err := made.cni.AddNetworkList(context.Background(), made.list, withPorts(rt, tcpPort(8080, 80)))
					return err
				}); err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
				if n := w.portmapLeft(t, id); n == 0 {
					t.Fatalf("%s: the reference portmap made no rule the test can see", id)
				}
				if err := w.del(ours, w.rt(id, nil, "eth0")); err != nil {
					t.Fatalf("DEL %s without mappings: %v", id, err)
				}
				if n := w.portmapLeft(t, id); n != 0 {
					t.Errorf("%d rules of the reference portmap left for %s, deleted without its mappings", n, id)
				}
			}
			// A container on two networks: the reference's forwards on one
			// (nftables marks them with the container ID alone) survive
			// the DEL of its attachment to the other.
			two := w.sb.PodT(t, "two")
			rtRef := w.rt("mig-two", two, "eth0")
			if err := w.inHost(func() error {
				_, err := refCNI.AddNetworkList(context.Background(), old, withPorts(rtRef, tcpPort(8080, 80)))
				return err
			}); err != nil {
				t.Fatalf("reference ADD: %v", err)
			}
			second := w.confList(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[{"type":"veth-ptp","ipam":{"type":"host-local","dataDir":%q,"subnet":"10.11.0.0/24"}}]}`,
				ref.version, w.netName("psecond"), filepath.Join(w.sb.Dir, "ipam")))
			rtSecond := w.rt("mig-two", two, "eth1")
			if _, err := w.add(second, rtSecond); err != nil {
				t.Fatal(err)
			}
			before := w.portmapLeft(t, "mig-two")
			if err := w.del(second, rtSecond); err != nil {
				t.Fatal(err)
			}
			if n := w.portmapLeft(t, "mig-two"); n == 0 || n != before {
				t.Errorf("the DEL on the second network took the reference's forwards of the first: %d rules left of %d", n, before)
			}
			if err := w.del(ours, w.rt("mig-two", nil, "eth0")); err != nil {
				t.Fatal(err)
			}
			if n := w.portmapLeft(t, "mig-two"); n != 0 {
				t.Errorf("%d rules of the reference portmap left for mig-two", n)
			}
			b := w.sb.PodT(t, "b")
			serveSource(t, b)
			rtB := withPorts(w.rt("mig-b", b, "eth0"), tcpPort(8080, 80))
			if _, err := w.add(ours, rtB); err != nil {
				t.Fatalf("ADD under the built-in mappings: %v", err)
			}
			wantAnswer(t, out, "tcp", "192.0.2.1:8080", "192.0.2.2")
			if err := w.del(ours, rtB); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// portmapLeft counts the reference portmap's rules of a container in the
// fake host: iptables lines naming its chain or comment, nftables rules
// with its ID as comment.
func (w *world) portmapLeft(t *testing.T, id string) int {
	t.Helper()
	n := 0
	_ = w.inHost(func() error {
		for _, c := range [][]string{{"iptables-save", "-t", "nat"}, {"ip6tables-save", "-t", "nat"}, {"nft", "list", "ruleset"}} {
			out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %v %s", c, err, out)
			}
			for _, l := range strings.Split(string(out), "\n") {
				// iptables-save escapes the quotes of the comment it lists.
				if strings.Contains(l, `id: \"`+id+`\"`) || strings.Contains(l, `comment "`+id+`"`) {
					n++
				}
			}
		}
		return nil
	})
	return n
}

// TestBackendSwitchedUnderLivePods: an operator switches ipMasqBackend
// while pods with host ports run. The DEL of a pod through the edited
// config removes its forwards from the backend that made them (they used
// to stay, sending the host port to whichever pod got the address next),
// GC does the same for a pod gone without DEL, and the DEL of the last pod
// removes the masquerade rules from both backends (the iptables chain
// used to stay after a switch to nftables). Both directions, on a host
// where a legacy x_tables table is loaded beside iptables-nft.
func TestBackendSwitchedUnderLivePods(t *testing.T) {
	for _, tc := range []struct{ was, now string }{{"iptables", "nftables"}, {"nftables", "iptables"}} {
		t.Run(tc.was+"-to-"+tc.now, func(t *testing.T) {
			w := newWorld(t)
			// Something on the host loaded a legacy x_tables table (netlink
			// cannot show its rules), though iptables itself is
			// iptables-nft: netns-cni's own rules stay readable over netlink.
			if err := w.inHost(func() error { return exec.Command("iptables-legacy", "-t", "raw", "-L", "-n").Run() }); err != nil {
				t.Fatal(err)
			}
			before := w.hostState(t)
			conf := func(backend string) *libcni.NetworkConfigList {
				return w.list("1.1.0", "switch", w.ptpConf("veth-ptp", families[2], capPorts+fmt.Sprintf(`,"ipMasq":true,"ipMasqBackend":%q`, backend)))
			}
			was, now := conf(tc.was), conf(tc.now)
			var rts []*libcni.RuntimeConf
			for i, id := range []string{"a", "b", "c"} {
				rt := withPorts(w.rt(id, w.sb.PodT(t, id), "eth0"), tcpPort(8080+i, 80), udpPort(8090+i, 80))
				if _, err := w.add(was, rt); err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
				rts = append(rts, rt)
			}
			// The operator command, reading the edited conflist, sees the
			// forwards in the backend that made them.
			r := w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", "--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "list", "--json")
			if r.exit != 0 || !strings.Contains(r.stdout, "8080/tcp") || !strings.Contains(r.stdout, "8092/udp") {
				t.Fatalf("netns-cni list misses the forwards made with %s: exit %d\n%s%s", tc.was, r.exit, r.stdout, r.stderr)
			}
			// Nor does audit take the masquerade rules in the other backend for missing.
			r = w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", "--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "audit", "--json")
			if strings.Contains(r.stdout, "rules-missing") {
				t.Fatalf("audit after the backend switch to %s:\n%s", tc.now, r.stdout)
			}
			// a: DEL through the edited config, without its mappings.
			if err := w.del(now, w.rt("a", nil, "eth0")); err != nil {
				t.Fatal(err)
			}
			if state := w.hostState(t); strings.Contains(state, "8080") || strings.Contains(state, "8090") {
				t.Fatalf("a's forwards left after its DEL through the %s config:\n%s", tc.now, state)
			}
			// b: left out of a GC through the edited config.
			if err := w.gc(now, types.GCAttachment{ContainerID: "c", IfName: "eth0"}); err != nil {
				t.Fatal(err)
			}
			state := w.hostState(t)
			if strings.Contains(state, "8081") || strings.Contains(state, "8091") {
				t.Fatalf("b's forwards left after GC through the %s config:\n%s", tc.now, state)
			}
			if !strings.Contains(state, "8082") {
				t.Fatalf("GC removed c's forwards, which it was told to keep:\n%s", state)
			}
			// c, the last: everything of the network goes, from both backends.
			if err := w.del(now, rts[2]); err != nil {
				t.Fatal(err)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("after the last DEL through the %s config:\n%s", tc.now, stateDiff(before, after))
			}
		})
	}
}

// TestPluginSwitchedUnderLivePods: a network's conflist changes plugin
// (veth-ptp to bridge-nat, as the node agent writes it) while pods with
// port mappings run; the DEL of a veth-ptp pod through the bridge-nat
// config removes all of the pod's, its veth's route_localnet element
// included, and leaves the other pod's.
func TestPluginSwitchedUnderLivePods(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	conf := func(plugin, extra string) *libcni.NetworkConfigList {
		return w.list("1.1.0", "plugsw", w.ptpConf(plugin, families[0], capPorts+`,"ipMasq":true`+extra))
	}
	was, now := conf("veth-ptp", ""), conf("bridge-nat", `,"bridge":"brsw0","isGateway":true,"removeEmptyBridge":true`)
	var rts []*libcni.RuntimeConf
	for i, id := range []string{"a", "b"} {
		rt := withPorts(w.rt(id, w.sb.PodT(t, id), "eth0"), tcpPort(8080+i, 80))
		if _, err := w.add(was, rt); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
		rts = append(rts, rt)
	}
	if err := w.del(now, rts[0]); err != nil {
		t.Fatal(err)
	}
	state := w.hostState(t)
	if veth := netconf.HostVethName("vp", "a", "eth0"); strings.Contains(state, veth) || strings.Contains(state, "8080") {
		t.Fatalf("a's forwards or its veth %s left after its DEL through the bridge-nat config:\n%s", veth, state)
	}
	if veth := netconf.HostVethName("vp", "b", "eth0"); !strings.Contains(state, veth) || !strings.Contains(state, "8081") {
		t.Fatalf("b's forwards or its veth %s gone with a's DEL:\n%s", veth, state)
	}
	if err := w.del(was, rts[1]); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("after the last DEL:\n%s", stateDiff(before, after))
	}
}

// TestTwoNetworksOnOneBridgeKeepLocalnet: two bridge-nat networks on one
// bridge, each with a pod with a host port, share the bridge's
// route_localnet. The last DEL of the first network turned it off, and
// the second's pod no longer answered the host's 127.0.0.1 — with CHECK
// passing. Now it stays on while another network's guard names the
// bridge, goes with the last, and CHECK says when it is off. Both
// backends, and one of each.
func TestTwoNetworksOnOneBridgeKeepLocalnet(t *testing.T) {
	for _, backends := range [][2]string{{"nftables", "nftables"}, {"iptables", "iptables"}, {"nftables", "iptables"}} {
		t.Run(backends[0]+"+"+backends[1], func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			// One subnet, a range each: a bridge takes one gateway address per family.
			conf := func(name, backend, first string) *libcni.NetworkConfigList {
				fam := family{"v4", fmt.Sprintf(`[[{"subnet":"10.10.0.0/24","rangeStart":"10.10.0.%s0","rangeEnd":"10.10.0.%s9"}]]`, first, first), true, false}
				extra := capPorts + fmt.Sprintf(`,"ipMasq":true,"ipMasqBackend":%q,"bridge":"brshared","isGateway":true,"removeEmptyBridge":true`, backend)
				return w.parsed("1.1.0", name, w.ptpConf("bridge-nat", fam, extra))
			}
			k, l := conf("k", backends[0], "1"), conf("l", backends[1], "2")
			podK, podL := w.sb.PodT(t, "k"), w.sb.PodT(t, "l")
			serveSource(t, podL)
			rtK, rtL := withPorts(w.rt("k", podK, "eth0"), tcpPort(2020, 80)), withPorts(w.rt("l", podL, "eth0"), tcpPort(2021, 80))
			if _, err := w.add(k, rtK); err != nil {
				t.Fatal(err)
			}
			if _, err := w.add(l, rtL); err != nil {
				t.Fatal(err)
			}
			localnet := func() bool {
				var on bool
				if err := w.inHost(func() (err error) { on, err = netconf.RouteLocalnet("brshared"); return err }); err != nil {
					t.Fatal(err)
				}
				return on
			}
			if err := w.del(k, rtK); err != nil {
				t.Fatal(err)
			}
			if !localnet() {
				t.Fatal("the first network's last DEL turned route_localnet off on the bridge the second's pod uses")
			}
			wantAnswer(t, w.sb.Host, "tcp", "127.0.0.1:2021", "*")
			if err := w.check(l, rtL); err != nil {
				t.Fatalf("CHECK of the second network's pod: %v", err)
			}
			if err := w.inHost(func() error { return netconf.SetRouteLocalnet("brshared", false) }); err != nil {
				t.Fatal(err)
			}
			if err := w.check(l, rtL); err == nil || !strings.Contains(err.Error(), "route_localnet") {
				t.Fatalf("CHECK with route_localnet off: %v, want an error naming it", err)
			}
			if err := w.inHost(func() error { return netconf.SetRouteLocalnet("brshared", true) }); err != nil {
				t.Fatal(err)
			}
			if err := w.del(l, rtL); err != nil {
				t.Fatal(err)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestDelWithOtherMappingsThanTheAdd: a runtime that passes DEL other
// port mappings than it gave the ADD. The nftables backend removed only
// the ones given, leaving the pod's forward to an address the next pod
// gets; it now removes the attachment's own, as the iptables backend does.
func TestDelWithOtherMappingsThanTheAdd(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			list := w.parsed("1.1.0", "otherports", w.ptpConf("veth-ptp", families[2], capPorts+fmt.Sprintf(`,"ipMasq":true,"ipMasqBackend":%q`, backend)))
			pod, other := w.sb.PodT(t, "p"), w.sb.PodT(t, "q")
			if _, err := w.add(list, withPorts(w.rt("c1", pod, "eth0"), tcpPort(29999, 80))); err != nil {
				t.Fatal(err)
			}
			rt2 := withPorts(w.rt("c2", other, "eth0"), tcpPort(27777, 80)) // keeps the network's rules
			if _, err := w.add(list, rt2); err != nil {
				t.Fatal(err)
			}
			if err := w.del(list, withPorts(w.rt("c1", pod, "eth0"), tcpPort(28888, 80))); err != nil {
				t.Fatal(err)
			}
			if st := w.hostState(t); strings.Contains(st, "29999") || !strings.Contains(st, "27777") {
				t.Fatalf("after the DEL with other mappings, want no forward of 29999 and c2's of 27777:\n%s", st)
			}
			if err := w.del(list, rt2); err != nil {
				t.Fatal(err)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}
