package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func node(name, ip string, cidrs ...string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.NodeSpec{PodCIDRs: cidrs},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}},
	}
}

func TestConflistDualStack(t *testing.T) {
	cfg := Config{ClusterCIDRs: []string{"10.244.0.0/16", "fd00:244::/56"}, Portmap: true}
	data, err := Conflist(cfg, node("n1", "192.168.1.1", "10.244.1.0/24", "fd00:244:0:1::/64"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		CNIVersion  string   `json:"cniVersion"`
		CNIVersions []string `json:"cniVersions"`
		Plugins     []struct {
			Type         string          `json:"type"`
			Capabilities map[string]bool `json:"capabilities"`
			NoMas        []string        `json:"nonMasqueradeCIDRs"`
			IPAM         struct {
				Ranges [][]struct{ Subnet string } `json:"ranges"`
				Routes []struct{ Dst string }      `json:"routes"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	p := got.Plugins[0]
	if p.Type != "bridge-nat" || len(p.IPAM.Ranges) != 2 || p.IPAM.Ranges[1][0].Subnet != "fd00:244:0:1::/64" || len(p.NoMas) != 2 {
		t.Fatalf("conflist %s", data)
	}
	// A default route per family: veth-ptp installs only IPAM's routes.
	if len(p.IPAM.Routes) != 2 || p.IPAM.Routes[0].Dst != "0.0.0.0/0" || p.IPAM.Routes[1].Dst != "::/0" {
		t.Fatalf("routes: %s", data)
	}
	if len(got.Plugins) != 2 || got.Plugins[1].Type != "portmap" || !got.Plugins[1].Capabilities["portMappings"] || p.Capabilities["portMappings"] {
		t.Fatalf("portmap asked for: the reference portmap must map the ports, and only it: %s", data)
	}
	if got.CNIVersion != "1.0.0" || got.CNIVersions != nil {
		t.Fatalf("versions: %s", data)
	}
	// By default the main plugin maps them, with no portmap in the chain.
	cfg.Portmap = false
	data, _ = Conflist(cfg, node("n1", "192.168.1.1", "10.244.1.0/24"))
	got.Plugins = nil
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Plugins) != 1 || !got.Plugins[0].Capabilities["portMappings"] {
		t.Fatalf("built-in port mappings: %s", data)
	}
	if got.CNIVersion != "1.0.0" || got.CNIVersions != nil {
		t.Fatalf("versions by default: %s", data)
	}
	// 1.0.0 by default (containerd 1.6/1.7); 1.1.0, with STATUS and GC,
	// when the ConfigMap asks.
	cfg.CNIVersion = "1.1.0"
	data, _ = Conflist(cfg, node("n1", "192.168.1.1", "10.244.1.0/24"))
	if err := json.Unmarshal(data, &got); err != nil || got.CNIVersion != "1.1.0" {
		t.Fatalf("cniVersion 1.1.0 asked for: %s", data)
	}
	if _, err := Conflist(cfg, node("n2", "192.168.1.2")); err == nil {
		t.Fatal("a node without podCIDRs got a conflist")
	}
}

func TestLoadConfig(t *testing.T) {
	shipped := `{"plugin": "bridge-nat", "clusterCIDRs": ["10.244.0.0/16", "fd00:244::/56"], "portmap": false, "hostGW": true}`
	cfg, err := LoadConfig(strings.NewReader(shipped))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Plugin: "bridge-nat", ClusterCIDRs: []string{"10.244.0.0/16", "fd00:244::/56"}, HostGW: true}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Fatalf("decoded (-want +got):\n%s", diff)
	}
	// with is the shipped config with key set to value (raw JSON).
	with := func(kv ...string) string {
		var m map[string]json.RawMessage
		_ = json.Unmarshal([]byte(shipped), &m)
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = json.RawMessage(kv[i+1])
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	for _, tc := range []struct {
		name, conf string
		errs       []string // each must be in the error; none: valid
	}{
		{"veth-ptp", with("plugin", `"veth-ptp"`), nil},
		{"mtu at the bounds", with("mtu", "576", "clusterCIDRs", `["10.244.0.0/16"]`), nil},
		{"mtu 1280 with IPv6", with("mtu", "1280"), nil},
		{"mtu 0 with IPv6", with("mtu", "0", "clusterCIDRs", `["fd00:244::/56"]`), nil},
		{"mtu at the top", with("mtu", "65535"), nil},
		{"mtu 0 is the default", with("mtu", "0"), nil},
		{"bridge of 15 bytes", with("bridge", `"br-0123456789ab"`), nil},
		{"typo", with("hostGw", "true"), []string{`"hostGw": unknown key; did you mean "hostGW"?`, "known keys: plugin, clusterCIDRs"}},
		{"cniVersion", with("cniVersion", `"0.4.0"`), []string{`"cniVersion": must be "1.0.0" or "1.1.0", got "0.4.0"`}},
		{"cniVersion with portmap", with("cniVersion", `"1.1.0"`, "portmap", "true"), []string{`"cniVersion": "1.1.0" with "portmap": true`}},
		{"other case", with("MTU", "1500"), []string{`"MTU": unknown key; did you mean "mtu"?`}},
		{"unknown", with("ipMasq", "true", "backend", `"nft"`), []string{`"backend": unknown key`, `"ipMasq": unknown key`}},
		{"wrong type", with("mtu", `"1500"`), []string{`"mtu": a JSON string where a number belongs`}},
		{"not a boolean", with("hostGW", `"yes"`), []string{`"hostGW": a JSON string where true or false belongs`}},
		{"not a list", with("clusterCIDRs", `"10.244.0.0/16"`), []string{`"clusterCIDRs": a JSON string where an array belongs`}},
		{"bad plugin", with("plugin", `"flannel"`), []string{`"plugin": must be "bridge-nat" or "veth-ptp", got "flannel"`}},
		{"no cluster CIDRs", with("clusterCIDRs", "[]"), []string{`"clusterCIDRs": missing`}},
		{"bad CIDRs", with("clusterCIDRs", `["10.244.0.0/16", "10.244.0.0/33", "10.245.0.0", "cluster"]`),
			[]string{`"clusterCIDRs[1]": "10.244.0.0/33" is not a CIDR`, `"clusterCIDRs[2]": "10.245.0.0" is not a CIDR`, `"clusterCIDRs[3]"`}},
		{"mtu too small", with("mtu", "575"), []string{`"mtu": must be 576-65535 (or 0 for the default), got 575`}},
		{"mtu too big", with("mtu", "65536"), []string{`"mtu": must be 576-65535`}},
		{"mtu negative", with("mtu", "-1"), []string{`"mtu": must be 576-65535`}},
		// IPv6 needs links of 1280 at least (RFC 8200 section 5).
		{"mtu below IPv6's", with("mtu", "1279"), []string{`"mtu": must be at least 1280 with an IPv6 entry in "clusterCIDRs"`, "got 1279"}},
		{"mtu below IPv6's, IPv6 only", with("mtu", "1000", "clusterCIDRs", `["fd00:244::/56"]`), []string{`"mtu": must be at least 1280`}},
		{"bridge too long", with("bridge", `"br-0123456789abc"`), []string{`"bridge": "br-0123456789abc" is not a valid interface name: interface name is too long (at most 15 bytes`}},
		// The plugin refuses it (the kernel would name the bridge br0): the
		// agent must not write a conflist no pod can start with.
		{"bridge with a %", with("bridge", `"br%d"`), []string{`"bridge": "br%d" is not a valid interface name: no '%'`}},
		{"bridge with a slash", with("bridge", `"br/0"`), []string{`"bridge": "br/0" is not a valid interface name`}},
		{"bridge with a space", with("bridge", `"br 0"`), []string{`"bridge"`}},
		{"bridge with a tab", with("bridge", `"br\t0"`), []string{`"bridge"`}},
		{"bridge with a colon", with("bridge", `"br:0"`), []string{`"bridge"`}},
		{"bridge .", with("bridge", `"."`), []string{`"bridge": "." is not a valid interface name`}},
		{"bridge ..", with("bridge", `".."`), []string{`"bridge": ".." is not a valid interface name`}},
		// Every problem at once, each naming its key.
		{"several", with("mtu", "9", "bridge", `"a/b"`, "clusterCIDRs", `["x"]`), []string{`"mtu"`, `"bridge"`, `"clusterCIDRs[0]"`}},
		{"empty", "  \n", []string{"empty"}},
		{"not an object", `["10.244.0.0/16"]`, []string{"not a JSON object"}},
		{"trailing data", shipped + ` {"mtu": 1500}`, []string{"not a JSON object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfig(strings.NewReader(tc.conf))
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("valid config refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %s", tc.conf)
			}
			for _, e := range tc.errs {
				if !strings.Contains(err.Error(), e) {
					t.Errorf("error %q does not say %q", err, e)
				}
			}
		})
	}
}

// TestConfNameSortsFirst: runtimes take the first file of the conf dir in
// lexical order; ours must come before those of the CNIs users move from.
func TestConfNameSortsFirst(t *testing.T) {
	names := []string{"10-flannel.conflist", "10-kindnet.conflist", "10-containerd-net.conflist", OldConfName,
		"87-podman-bridge.conflist", "99-loopback.conf", ConfName}
	slices.Sort(names)
	if names[0] != ConfName {
		t.Fatalf("order %v: %s must come first", names, ConfName)
	}
}

// TestUpgradeRemovesOldConflist: an upgraded node's 10-netns-cni.conflist,
// written by the agent, goes once 05-netns-cni.conflist is written (not
// before: the node would have no network config in between); a file of
// that name the agent did not write stays.
func TestUpgradeRemovesOldConflist(t *testing.T) {
	cfg := Config{ClusterCIDRs: []string{"10.244.0.0/16"}}
	old, err := Conflist(cfg, node("n1", "192.168.1.1", "10.244.1.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, old string
		removed   bool
	}{
		{"written by the agent", string(old), true},
		{"veth-ptp, by the agent", strings.Replace(string(old), `"bridge-nat"`, `"veth-ptp"`, 1), true},
		{"another network", strings.Replace(string(old), `"netns-cni"`, `"mynet"`, 1), false},
		{"another plugin", strings.Replace(string(old), `"bridge-nat"`, `"bridge"`, 1), false},
		{"not JSON", "# edited by hand\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a := &Agent{Config: cfg, NodeName: "n1", ConfPath: filepath.Join(dir, ConfName), OldConfPath: filepath.Join(dir, OldConfName),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			if err := os.WriteFile(a.OldConfPath, []byte(tc.old), 0o644); err != nil {
				t.Fatal(err)
			}
			// Other files of the conf dir are never touched.
			other := filepath.Join(dir, "10-netns-cni.conf")
			if err := os.WriteFile(other, old, 0o644); err != nil {
				t.Fatal(err)
			}
			// No podCIDR yet: nothing written, the old conflist stays.
			if err := a.Sync([]*corev1.Node{node("n1", "192.168.1.1")}); err == nil {
				t.Fatal("synced without a podCIDR")
			}
			if _, err := os.Stat(a.OldConfPath); err != nil {
				t.Fatalf("old conflist removed before the new one was written: %v", err)
			}
			if err := a.Sync([]*corev1.Node{node("n1", "192.168.1.1", "10.244.1.0/24")}); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(a.ConfPath); err != nil {
				t.Fatal(err)
			}
			_, err := os.Stat(a.OldConfPath)
			if gone := os.IsNotExist(err); gone != tc.removed {
				t.Fatalf("old conflist removed: %v, want %v", gone, tc.removed)
			}
			if b, _ := os.ReadFile(a.OldConfPath); !tc.removed && string(b) != tc.old {
				t.Fatalf("a conflist the agent did not write changed: %q", b)
			}
			if _, err := os.Stat(other); err != nil {
				t.Fatalf("%s: %v", other, err)
			}
		})
	}
	// Nothing there: nothing to do.
	if removed, err := RemoveOldConflist(filepath.Join(t.TempDir(), OldConfName)); removed || err != nil {
		t.Fatalf("missing file: %v %v", removed, err)
	}
}

func TestInstallBinariesReplacesAtomicallyAndOnlyWhenChanged(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for n, body := range map[string]string{"veth-ptp": "v1", "bridge-nat": "b1"} {
		if err := os.WriteFile(filepath.Join(src, n), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	names := []string{"veth-ptp", "bridge-nat"}
	done, err := InstallBinaries(src, dst, names)
	if err != nil || len(done) != 2 {
		t.Fatalf("first install: %v %v", done, err)
	}
	// A reader holding the old file keeps it whole while it is replaced.
	old, _ := os.Open(filepath.Join(dst, "veth-ptp"))
	defer old.Close()
	_ = os.WriteFile(filepath.Join(src, "veth-ptp"), []byte("v2-longer"), 0o755)
	done, err = InstallBinaries(src, dst, names)
	if err != nil || len(done) != 1 || done[0] != "veth-ptp" {
		t.Fatalf("second install: %v %v", done, err)
	}
	if b, _ := io.ReadAll(old); string(b) != "v1" {
		t.Fatalf("the running binary changed under its reader: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "veth-ptp")); string(b) != "v2-longer" {
		t.Fatalf("new binary %q", b)
	}
	if st, _ := os.Stat(filepath.Join(dst, "bridge-nat")); st.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", st.Mode())
	}
	ents, _ := os.ReadDir(dst)
	if len(ents) != 2 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// TestRunRewritesOnceAndFollowsPodCIDRChanges runs the agent against a fake
// API server: the conflist is written once, rewritten when the node's
// podCIDRs change, and not touched when nothing changed.
func TestRunRewritesOnceAndFollowsPodCIDRChanges(t *testing.T) {
	client := fake.NewClientset(node("n1", "192.168.1.1", "10.244.1.0/24"), node("n2", "192.168.1.2", "10.244.2.0/24"))
	conf := filepath.Join(t.TempDir(), ConfName)
	a := &Agent{Config: Config{ClusterCIDRs: []string{"10.244.0.0/16"}}, Client: client, NodeName: "n1", ConfPath: conf,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	a.Probes = NewProbes()
	a.Probes.SetInstalled()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	waitFor(t, "the agent to be ready", func() bool { return a.Probes.Ready() == nil })
	first := holdFile(t, conf)
	// Another node changes: our conflist is not rewritten.
	n2 := node("n2", "192.168.1.2", "10.244.9.0/24")
	if _, err := client.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st, err := os.Stat(conf); err != nil || !os.SameFile(st, first) {
		t.Fatalf("conflist rewritten though our node did not change (%v)", err)
	}
	// Our node becomes dual-stack: rewritten with both ranges.
	n1 := node("n1", "192.168.1.1", "10.244.1.0/24", "fd00:244:0:1::/64")
	if _, err := client.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(conf)
		if json.Valid(b) && strings.Contains(string(b), "fd00:244:0:1::/64") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("conflist never followed the podCIDR change:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Written once for the change: later syncs (another node's update
	// here) leave it alone.
	after := holdFile(t, conf)
	if os.SameFile(after, first) {
		t.Fatal("the conflist changed in place, not renamed over: the checks of this test would not see a rewrite")
	}
	n2.Spec.PodCIDRs = []string{"10.244.8.0/24"}
	if _, err := client.CoreV1().Nodes().Update(ctx, n2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if st, err := os.Stat(conf); err != nil || !os.SameFile(st, after) {
		t.Fatalf("conflist rewritten again without a change of our node (%v)", err)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// holdFile opens path for the rest of the test and returns what it is.
// Every write of the agent renames a new file over its target, so "not
// rewritten" is os.SameFile with it, which mtimes would not tell within the
// filesystem's timestamp granularity. Held open, the file keeps its inode
// number, which a later file could otherwise be given once it is replaced.
func holdFile(t *testing.T, path string) os.FileInfo {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// dualNode is a node with several addresses, each "type=address".
func dualNode(name string, cidrs []string, addrs ...string) *corev1.Node {
	n := node(name, "", cidrs...)
	n.Status.Addresses = nil
	for _, a := range addrs {
		typ, addr, _ := strings.Cut(a, "=")
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeAddressType(typ), Address: addr})
	}
	return n
}

// TestPeersDualStack: one address per family, the first InternalIP of each,
// and every pod CIDR routed via the address of its own family.
func TestPeersDualStack(t *testing.T) {
	nodes := []*corev1.Node{
		dualNode("self", []string{"10.244.0.0/24", "fd00:244::/64"}, "InternalIP=192.168.1.10", "InternalIP=fd00::10"),
		dualNode("dual", []string{"10.244.1.0/24", "fd00:244:1::/64"}, "InternalIP=192.168.1.11", "InternalIP=fd00::11"),
		// IPv6 listed first, a second address of each family, an
		// ExternalIP before them all: the first InternalIP of each family.
		dualNode("v6first", []string{"fd00:244:2::/64", "10.244.2.0/24"},
			"ExternalIP=203.0.113.2", "InternalIP=fd00::12", "InternalIP=192.168.1.12", "InternalIP=fd00::99", "InternalIP=192.168.1.99", "Hostname=v6first"),
		// Dual-stack pod CIDRs, an IPv4 address only: the IPv6 CIDR has no gateway.
		dualNode("v4only", []string{"10.244.3.0/24", "fd00:244:3::/64"}, "InternalIP=192.168.1.13"),
		// Nothing of its pod CIDR's family to route via: not a peer.
		dualNode("mismatch", []string{"fd00:244:4::/64"}, "InternalIP=192.168.1.14"),
		dualNode("nocidr", nil, "InternalIP=192.168.1.15"),
		dualNode("noaddr", []string{"10.244.6.0/24"}, "InternalIP=not-an-ip"),
	}
	type route struct{ Dst, Via string }
	got := map[string][]route{}
	for _, p := range Peers("self", nodes) {
		for _, c := range p.PodCIDRs {
			via := "none"
			if gw := p.Gateway(c); gw != nil {
				via = gw.String()
			}
			got[p.Name] = append(got[p.Name], route{c.String(), via})
		}
	}
	want := map[string][]route{
		"dual":    {{"10.244.1.0/24", "192.168.1.11"}, {"fd00:244:1::/64", "fd00::11"}},
		"v6first": {{"fd00:244:2::/64", "fd00::12"}, {"10.244.2.0/24", "192.168.1.12"}},
		"v4only":  {{"10.244.3.0/24", "192.168.1.13"}, {"fd00:244:3::/64", "none"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("peers (-want +got):\n%s", diff)
	}
}

// TestSyncRoutes: in a sandbox node namespace with a link on 192.168.77.0/24
// and fd00:77::/64, routes to reachable peers' pod CIDRs are added (a
// dual-stack peer's IPv6 CIDR via its IPv6 address), removed with their
// node, unreachable peers are skipped, and other routes are left alone;
// Sync keeps them in step with the peers and hostGW even while the agent's
// own node has no podCIDR.
func TestSyncRoutes(t *testing.T) {
	sb := nstest.NewT(t)
	peer := sb.PodT(t, "switch")
	h, err := sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := nstest.Wire(nstest.End{NS: sb.Host, Name: "eth0", Addrs: []string{"192.168.77.1/24", "fd00:77::1/64"}}, nstest.End{NS: peer, Name: "eth0"}); err != nil {
		t.Fatal(err)
	}
	l, err := h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's route, which must stay.
	_, foreign, _ := net.ParseCIDR("10.99.0.0/16")
	if err := h.RouteAdd(&netlink.Route{Dst: foreign, Gw: net.ParseIP("192.168.77.254"), LinkIndex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	nodes := []*corev1.Node{
		node("self", "192.168.77.1", "10.244.0.0/24"),
		node("a", "192.168.77.2", "10.244.1.0/24"),
		node("b", "192.168.77.3", "10.244.2.0/24"),
		node("far", "172.31.0.9", "10.244.3.0/24"), // not on a connected subnet
		dualNode("dual", []string{"10.244.4.0/24", "fd00:244:4::/64"}, "InternalIP=192.168.77.5", "InternalIP=fd00:77::5"),
	}
	added, removed, err := SyncRoutes(h, Peers("self", nodes))
	if err != nil || added != 4 || removed != 0 {
		t.Fatalf("first sync: +%d -%d %v", added, removed, err)
	}
	v6, _ := h.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{Protocol: RouteProto}, netlink.RT_FILTER_PROTOCOL)
	if len(v6) != 1 || v6[0].Dst.String() != "fd00:244:4::/64" || !v6[0].Gw.Equal(net.ParseIP("fd00:77::5")) {
		t.Fatalf("IPv6 routes %v, want fd00:244:4::/64 via fd00:77::5", v6)
	}
	if added, removed, _ := SyncRoutes(h, Peers("self", nodes)); added+removed != 0 {
		t.Fatalf("second sync changed things: +%d -%d", added, removed)
	}
	// Node b is deleted, node a moves, node dual loses its IPv6 address.
	nodes = []*corev1.Node{nodes[0], node("a", "192.168.77.4", "10.244.1.0/24"),
		dualNode("dual", []string{"10.244.4.0/24", "fd00:244:4::/64"}, "InternalIP=192.168.77.5")}
	added, removed, err = SyncRoutes(h, Peers("self", nodes))
	if err != nil || added != 1 || removed != 3 {
		t.Fatalf("after changes: +%d -%d %v", added, removed, err)
	}
	ourGateways := func() map[string]string {
		ours, _ := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: RouteProto}, netlink.RT_FILTER_PROTOCOL)
		gws := map[string]string{}
		for _, r := range ours {
			gws[r.Dst.String()] = r.Gw.String()
		}
		return gws
	}
	if diff := cmp.Diff(map[string]string{"10.244.1.0/24": "192.168.77.4", "10.244.4.0/24": "192.168.77.5"}, ourGateways()); diff != "" {
		t.Fatalf("our routes (-want +got):\n%s", diff)
	}
	// Our own node without a podCIDR (yet, or any more): no conflist, but
	// the routes still follow the peers and the config.
	a := &Agent{Config: Config{ClusterCIDRs: []string{"10.244.0.0/16"}, HostGW: true}, NodeName: "self", ConfPath: filepath.Join(t.TempDir(), ConfName),
		Routes: &h, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	noCIDR := []*corev1.Node{node("self", "192.168.77.1"), node("a", "192.168.77.6", "10.244.1.0/24"), nodes[2]}
	if err := a.Sync(noCIDR); err == nil || !strings.Contains(err.Error(), "no podCIDRs") {
		t.Fatalf("sync without our podCIDR: error %v, want one saying so", err)
	}
	if diff := cmp.Diff(map[string]string{"10.244.1.0/24": "192.168.77.6", "10.244.4.0/24": "192.168.77.5"}, ourGateways()); diff != "" {
		t.Fatalf("without our podCIDR, a peer moved; our routes (-want +got):\n%s", diff)
	}
	a.Config.HostGW = false
	if err := a.Sync(noCIDR); err == nil {
		t.Fatal("synced without our podCIDR")
	}
	if gws := ourGateways(); len(gws) != 0 {
		t.Fatalf("host-gw off without our podCIDR, our routes stay: %v", gws)
	}
	// Host-gw turned off by a ConfigMap edit: the agent's routes go.
	a.Config.HostGW = true
	if err := a.Sync(nodes); err != nil {
		t.Fatal(err)
	}
	a.Config.HostGW = false
	if err := a.Sync(nodes); err != nil {
		t.Fatal(err)
	}
	if gws := ourGateways(); len(gws) != 0 {
		t.Fatalf("host-gw off, our routes stay: %v", gws)
	}
	all, _ := h.RouteList(l, netlink.FAMILY_V4)
	found := false
	for _, r := range all {
		if r.Dst != nil && r.Dst.String() == "10.99.0.0/16" {
			found = true
		}
	}
	if !found {
		t.Fatal("a route the agent did not make was removed")
	}
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestProbes: /readyz (and its alias /healthz) answer 200 only once the
// plugins are installed and the conflist written; /livez answers 200 from
// the start, while the loop turns, and 503 once it stopped turning.
func TestProbes(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	p := &Probes{Stale: time.Minute, now: func() time.Time { return clock }}
	p.Beat()
	h := p.Handler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	check := func(step string, want map[string]int) {
		t.Helper()
		for path, code := range want {
			if got, body := get(path); got != code {
				t.Errorf("%s: GET %s = %d %q, want %d", step, path, got, body, code)
			}
		}
	}
	check("at start", map[string]int{"/readyz": 503, "/healthz": 503, "/livez": 200, "/metrics": 404})
	if _, body := get("/readyz"); !strings.Contains(body, "plugins not installed") {
		t.Errorf("at start /readyz says %q", body)
	}
	p.SetInstalled()
	// Waiting for a podCIDR: live, not ready, for as long as it takes.
	for range 10 {
		clock = clock.Add(30 * time.Second)
		p.Beat()
		check("waiting for a podCIDR", map[string]int{"/readyz": 503, "/healthz": 503, "/livez": 200})
	}
	if _, body := get("/readyz"); !strings.Contains(body, "no conflist yet") {
		t.Errorf("without a conflist /readyz says %q", body)
	}
	p.SetConfigured()
	check("configured", map[string]int{"/readyz": 200, "/healthz": 200, "/livez": 200})
	// The loop stops turning: no longer live, still ready.
	clock = clock.Add(time.Minute + time.Second)
	check("wedged", map[string]int{"/readyz": 200, "/livez": 503})
	p.Beat()
	check("turning again", map[string]int{"/livez": 200})
	// Configured before installed is not ready either.
	q := NewProbes()
	q.SetConfigured()
	if q.Ready() == nil || q.Live() != nil {
		t.Fatalf("configured, not installed: ready %v, live %v", q.Ready(), q.Live())
	}
}

// TestRunStaysLiveWithoutPodCIDR: a node without a podCIDR keeps its agent
// live (the loop turns) and not ready, until the podCIDR comes.
func TestRunStaysLiveWithoutPodCIDR(t *testing.T) {
	client := fake.NewClientset(node("n1", "192.168.1.1"))
	conf := filepath.Join(t.TempDir(), "05-netns-cni.conflist")
	p := NewProbes()
	p.Stale = 200 * time.Millisecond
	p.SetInstalled()
	a := &Agent{Config: Config{ClusterCIDRs: []string{"10.244.0.0/16"}}, Client: client, NodeName: "n1", ConfPath: conf,
		Probes: p, PollEvery: 20 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	// Well past Stale without a podCIDR: live all along, never ready.
	for range 25 {
		time.Sleep(20 * time.Millisecond)
		if err := p.Live(); err != nil {
			t.Fatalf("not live while waiting for a podCIDR: %v", err)
		}
		if p.Ready() == nil {
			t.Fatal("ready without a conflist")
		}
	}
	if _, err := os.Stat(conf); !os.IsNotExist(err) {
		t.Fatalf("conflist without a podCIDR: %v", err)
	}
	if _, err := client.CoreV1().Nodes().Update(ctx, node("n1", "192.168.1.1", "10.244.1.0/24"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "readiness after the podCIDR came", func() bool { return p.Ready() == nil })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The loop has stopped: liveness goes once Stale has passed.
	waitFor(t, "liveness to go with the loop", func() bool { return p.Live() != nil })
}

// TestReload: what a new read of the config file means, without a cluster.
func TestReload(t *testing.T) {
	const base = `{"clusterCIDRs": ["10.244.0.0/16"], "hostGW": true}`
	current := Config{ClusterCIDRs: []string{"10.244.0.0/16"}, HostGW: true}
	for _, tc := range []struct {
		name, seen, now string
		apply           bool
		want            Config // when apply
		err             string // in the error, when not applied for one
	}{
		{name: "unchanged", seen: base, now: base},
		{name: "reformatted", seen: base, now: "{\n  \"hostGW\": true,\n  \"clusterCIDRs\": [\"10.244.0.0/16\"]\n}\n"},
		{name: "a new mtu", seen: base, now: `{"clusterCIDRs": ["10.244.0.0/16"], "hostGW": true, "mtu": 1400}`,
			apply: true, want: Config{ClusterCIDRs: []string{"10.244.0.0/16"}, HostGW: true, MTU: 1400}},
		{name: "host-gw off", seen: base, now: `{"clusterCIDRs": ["10.244.0.0/16"]}`,
			apply: true, want: Config{ClusterCIDRs: []string{"10.244.0.0/16"}}},
		{name: "a typo", seen: base, now: `{"clusterCIDRs": ["10.244.0.0/16"], "hostGw": false}`, err: `"hostGw": unknown key`},
		{name: "a bad CIDR", seen: base, now: `{"clusterCIDRs": ["10.244.0.0/61"], "hostGW": true}`, err: `"clusterCIDRs[0]"`},
		{name: "truncated", seen: base, now: `{"clusterCIDRs": ["10.244.0.0/16"], "hostGW": tr`, err: "not a JSON object"},
		// The bad edit read again: said already, nothing new.
		{name: "the same bad edit", seen: `{"mtu": 9}`, now: `{"mtu": 9}`},
		// Back from a bad edit to what runs: nothing to apply.
		{name: "bad edit undone", seen: `{"mtu": 9}`, now: base},
		{name: "bad edit fixed", seen: `{"mtu": 9}`, now: `{"clusterCIDRs": ["10.244.0.0/16"], "hostGW": true, "mtu": 9000}`,
			apply: true, want: Config{ClusterCIDRs: []string{"10.244.0.0/16"}, HostGW: true, MTU: 9000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, apply, err := Reload(current, []byte(tc.seen), []byte(tc.now))
			if apply != tc.apply {
				t.Fatalf("apply %v, want %v (error %v)", apply, tc.apply, err)
			}
			if tc.err == "" && err != nil {
				t.Fatalf("error %v", err)
			}
			if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("error %v, want one saying %s", err, tc.err)
			}
			if diff := cmp.Diff(tc.want, got); apply && diff != "" {
				t.Fatalf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// configMapVolume lays out dir as the kubelet does a ConfigMap volume:
// config.json -> ..data/config.json, ..data -> a timestamped directory.
// Each call is an update: a new directory, then ..data swapped to it
// atomically (a symlink renamed over the old one).
func configMapVolume(t *testing.T, dir, content string) {
	t.Helper()
	ts := fmt.Sprintf("..%d", time.Now().UnixNano())
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ts, "config.json"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "config.json")); os.IsNotExist(err) {
		if err := os.Symlink("..data/config.json", filepath.Join(dir, "config.json")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestConfigFileFollowsConfigMapUpdates: through the kubelet's symlink
// swap, a valid change is applied, a bad one reported once and the running
// config kept, an unreadable file reported once.
func TestConfigFileFollowsConfigMapUpdates(t *testing.T) {
	dir := t.TempDir()
	configMapVolume(t, dir, `{"clusterCIDRs": ["10.244.0.0/16"]}`)
	f := &ConfigFile{Path: filepath.Join(dir, "config.json")}
	cfg, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, apply, err := f.Poll(cfg); apply || err != nil {
		t.Fatalf("nothing changed: apply %v, error %v", apply, err)
	}
	configMapVolume(t, dir, `{"clusterCIDRs": ["10.244.0.0/16"], "plugin": "veth-ptp"}`)
	next, apply, err := f.Poll(cfg)
	if !apply || err != nil || next.Plugin != "veth-ptp" {
		t.Fatalf("ConfigMap update: %+v apply %v error %v", next, apply, err)
	}
	cfg = next
	configMapVolume(t, dir, `{"clusterCIDRs": ["10.244.0.0/16"], "plugin": "veth-ptp", "bridge": "this-is-far-too-long"}`)
	if _, apply, err := f.Poll(cfg); apply || err == nil || !strings.Contains(err.Error(), `"bridge"`) || !strings.Contains(err.Error(), f.Path) {
		t.Fatalf("bad update: apply %v, error %v", apply, err)
	}
	if _, apply, err := f.Poll(cfg); apply || err != nil {
		t.Fatalf("bad update polled again: apply %v, error %v (want it said once)", apply, err)
	}
	if err := os.Remove(filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if _, apply, err := f.Poll(cfg); apply || err == nil {
		t.Fatalf("unreadable file: apply %v, error %v", apply, err)
	}
	if _, apply, err := f.Poll(cfg); apply || err != nil {
		t.Fatalf("unreadable file polled again: apply %v, error %v (want it said once)", apply, err)
	}
	configMapVolume(t, dir, `{"clusterCIDRs": ["10.244.0.0/16", "fd00:244::/56"], "plugin": "veth-ptp"}`)
	if next, apply, err := f.Poll(cfg); !apply || err != nil || len(next.ClusterCIDRs) != 2 {
		t.Fatalf("readable again: %+v apply %v error %v", next, apply, err)
	}
}

// syncBuffer is a log sink safe for Run's goroutine and the test's.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunAppliesConfigChanges: the agent, against a fake API server,
// re-renders the conflist when the ConfigMap changes, and keeps it (and
// logs at error) when the change does not validate.
func TestRunAppliesConfigChanges(t *testing.T) {
	cm := t.TempDir()
	configMapVolume(t, cm, `{"clusterCIDRs": ["10.244.0.0/16"]}`)
	f := &ConfigFile{Path: filepath.Join(cm, "config.json")}
	cfg, err := f.Load()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	conf := filepath.Join(t.TempDir(), ConfName)
	a := &Agent{Config: cfg, ConfigFile: f, Client: fake.NewClientset(node("n1", "192.168.1.1", "10.244.1.0/24")),
		NodeName: "n1", ConfPath: conf, PollEvery: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- a.Run(ctx) }()
	read := func() string { b, _ := os.ReadFile(conf); return string(b) }
	waitFor(t, "the first conflist", func() bool { return strings.Contains(read(), `"bridge": "cni0"`) })

	configMapVolume(t, cm, `{"clusterCIDRs": ["10.244.0.0/16"], "bridge": "k8s0", "mtu": 1400}`)
	waitFor(t, "the conflist to follow the ConfigMap", func() bool {
		c := read()
		return strings.Contains(c, `"bridge": "k8s0"`) && strings.Contains(c, `"mtu": 1400`)
	})
	good := read()

	configMapVolume(t, cm, `{"clusterCIDRs": ["10.244.0.0/16"], "bridge": "k8s0", "mtu": 1400, "hostGw": true}`)
	waitFor(t, "the bad edit logged", func() bool { return strings.Contains(logs.String(), "level=ERROR") })
	time.Sleep(100 * time.Millisecond) // ten more polls
	if c := read(); c != good {
		t.Fatalf("a config that does not validate changed the conflist:\n%s", c)
	}
	if l := logs.String(); strings.Count(l, "level=ERROR") != 1 || !strings.Contains(l, `unknown key`) || !strings.Contains(l, "hostGw") {
		t.Fatalf("want the bad edit logged once at error, naming the key:\n%s", l)
	}

	// Fixed: applied.
	configMapVolume(t, cm, `{"clusterCIDRs": ["10.244.0.0/16"], "plugin": "veth-ptp", "mtu": 1400}`)
	waitFor(t, "the fixed config applied", func() bool { return strings.Contains(read(), `"type": "veth-ptp"`) })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestReloadWarnsOfKeysThatLeak: a live change of plugin, bridge, dataDir
// or portmap is applied, and logged at warn naming those keys: the runtime
// deletes pods made before with the new conflist, so their old state
// (addresses in the old store, port forwards of the other mechanism) stays.
func TestReloadWarnsOfKeysThatLeak(t *testing.T) {
	const base = `{"clusterCIDRs": ["10.244.0.0/16"]`
	for _, tc := range []struct {
		name, now string
		keys      []string // named at warn; none: no warning
	}{
		{"mtu", base + `, "mtu": 1400}`, nil},
		{"hostGW", base + `, "hostGW": true}`, nil},
		{"the defaults spelled out", base + `, "plugin": "bridge-nat", "bridge": "cni0"}`, nil},
		{"dataDir", base + `, "dataDir": "/var/lib/netns-cni/k8s"}`, []string{"dataDir"}},
		{"portmap", base + `, "portmap": true}`, []string{"portmap"}},
		{"plugin", base + `, "plugin": "veth-ptp"}`, []string{"plugin"}},
		{"bridge", base + `, "bridge": "k8s0"}`, []string{"bridge"}},
		{"several", base + `, "dataDir": "/d", "portmap": true, "mtu": 1400}`, []string{"dataDir", "portmap"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(path, []byte(base+"}"), 0o644); err != nil {
				t.Fatal(err)
			}
			f := &ConfigFile{Path: path}
			cfg, err := f.Load()
			if err != nil {
				t.Fatal(err)
			}
			var logs syncBuffer
			a := &Agent{Config: cfg, ConfigFile: f, Log: slog.New(slog.NewTextHandler(&logs, nil))}
			if err := os.WriteFile(path, []byte(tc.now), 0o644); err != nil {
				t.Fatal(err)
			}
			if !a.reload() {
				t.Fatalf("not applied: %s\n%s", tc.now, logs.String())
			}
			var warns []string
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "level=WARN") {
					warns = append(warns, l)
				}
			}
			if len(tc.keys) == 0 {
				if len(warns) != 0 {
					t.Fatalf("warned of nothing to warn of: %v", warns)
				}
				return
			}
			if len(warns) != 1 {
				t.Fatalf("want one warning, got:\n%s", logs.String())
			}
			for _, k := range tc.keys {
				if !strings.Contains(warns[0], k) {
					t.Errorf("the warning does not name %s: %s", k, warns[0])
				}
			}
			for _, k := range []string{"plugin", "bridge", "dataDir", "portmap"} {
				if !slices.Contains(tc.keys, k) && strings.Contains(warns[0], k) {
					t.Errorf("the warning names %s, which did not change: %s", k, warns[0])
				}
			}
			if !strings.Contains(warns[0], "drain") {
				t.Errorf("the warning does not say to drain the node: %s", warns[0])
			}
		})
	}
}
