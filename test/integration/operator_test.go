package integration

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/netns-cni/netns-cni/pkg/filter"
	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestOperatorCommand plants one leak of each kind audit knows, made by
// netns-cni and by the reference plugins, beside live attachments; list,
// audit and repair (dry run, then --yes) find and fix each, and never
// touch a live attachment.
func TestOperatorCommand(t *testing.T) {
	w := newWorld(t)
	ours := w.list("1.0.0", "op-ours", w.ptpConf("veth-ptp", families[0], capPorts+`,"ipMasq":true`))
	ref := w.list("1.0.0", "op-ref", fmt.Sprintf(`{"type":"ptp","ipMasq":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.11.0.0/24"}}`, filepath.Join(w.sb.Dir, "ipam")))
	// A network whose pods are all gone, leaving iptables chains behind (its
	// masquerade chain, its FORWARD acceptance).
	iptLeft := netconf.Key(w.list("1.0.0", "op-iptleft", w.ptpConf("veth-ptp", families[1], `"ipMasq":true,"ipMasqBackend":"iptables"`)).Name)
	tiny := w.list("1.0.0", "op-tiny", fmt.Sprintf(`{"type":"veth-ptp","ipMask":true,"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.12.0.0/30"}}`, filepath.Join(w.sb.Dir, "ipam")))
	pods := map[string]*nsutil.NS{}
	add := func(list any, id string) {
		t.Helper()
		pod := w.sb.PodT(t, id)
		pods[id] = pod
		l := ours
		switch list {
		case "ref":
			l = ref
		case "tiny":
			l = tiny
		}
		rt := w.rt(id, pod, "eth0")
		if port, ok := map[string]int{"live-ours": 8080, "gone-ours": 8081}[id]; ok {
			rt = withPorts(rt, tcpPort(port, 80))
		}
		if _, err := w.add(l, rt); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	for _, id := range []string{"live-ours", "gone-ours", "gone-cache", "live-noresv"} {
		add("ours", id)
	}
	for _, id := range []string{"live-ref", "gone-ref"} {
		add("ref", id)
	}
	add("tiny", "live-tiny") // a /30 has one address: full
	// The leaks: namespaces deleted without DEL.
	for _, id := range []string{"gone-ours", "gone-ref", "gone-cache"} {
		if err := w.sb.RemovePod(pods[id]); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel frees a namespace, and the host ends of its veths, a moment later.
	goneLink := netconf.HostVethName("vp", "gone-ours", "eth0")
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if !slices.Contains(linkNames(t, w.sb.Host), goneLink) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s outlived its namespace", goneLink)
		}
	}
	// gone-cache: its plugin DEL ran (not through libcni): only the cache entry is left.
	stdin := w.pluginStdin("1.0.0", "op-ours", "veth-ptp", families[0], `"ipMasq":true`)
	if r := w.exec("veth-ptp", w.pluginEnv("DEL", "gone-cache", "", "eth0"), stdin); r.exit != 0 {
		t.Fatalf("DEL: %s", r.stdout)
	}
	// live-noresv: its reservation removed by hand.
	store := filepath.Join(w.sb.Dir, "ipam", w.netName("op-ours"))
	files, _ := os.ReadDir(store)
	for _, f := range files {
		b, _ := os.ReadFile(filepath.Join(store, f.Name()))
		if strings.HasPrefix(string(b), "live-noresv") {
			_ = os.Remove(filepath.Join(store, f.Name()))
		}
	}
	// A reservation from before the boot.
	old := filepath.Join(store, "10.10.0.200")
	if err := os.WriteFile(old, []byte("rebooted\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := ipam.BootTime().Add(-time.Hour)
	if err := os.Chtimes(old, before, before); err != nil {
		t.Fatal(err)
	}
	// A reservation of this boot that nothing else knows of: no cache
	// entry, no netns-cni host link — what a live reference pod looks like
	// once libcni's cache is gone. Audit cannot tell it is dead; repair
	// must leave it (it used to DEL it as an orphan).
	if err := os.WriteFile(filepath.Join(store, "10.10.0.201"), []byte("unverified\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A conflist that does not parse: reported, and the rest still read.
	if err := os.WriteFile(filepath.Join(w.confDir, "zz-broken.conflist"), []byte(`{"name":`), 0o600); err != nil {
		t.Fatal(err)
	}
	// NAT state of a network without attachments, a retired link, and a
	// forward of an attachment that is nowhere.
	if err := w.inHost(func() error {
		for _, c := range [][]string{{"nft", "add", "table", "inet", "netns-cni-op-natleft"},
			{"nft", "add", "element", "inet", "netns-cni-" + w.netName("op-ours"), "hostports-ipv4", `{ tcp . 9999 comment "stray/eth0" : 10.10.0.99 . 80 }`},
			{"ip", "link", "add", "vpretired0", "type", "veth", "peer", "name", "vpretired1"},
			{"iptables", "-t", "nat", "-N", nat.ChainName(iptLeft)}, {"iptables", "-N", filter.ForwardChain(iptLeft)},
			{"iptables", "-t", "nat", "-N", "NETNS-CNI-0123456789ABCDE"}, // of a network in no conflist
			{"ip", "link", "set", "vpretired0", "alias", "netns-cni:retired"}} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%v: %w %s", c, err, out)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	op := func(args ...string) execResult {
		t.Helper()
		env := []string{"PATH=" + os.Getenv("PATH")}
		return w.exec("netns-cni", env, "", append([]string{"--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "--cni-path", binDir + ":" + refDir}, args...)...)
	}
	kinds := func() []string {
		t.Helper()
		r := op("audit", "--json")
		var ps []struct {
			Kind        string `json:"kind"`
			ContainerID string `json:"containerID"`
			File        string `json:"file"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil {
			t.Fatalf("audit --json: %v: %s %s", err, r.stdout, r.stderr)
		}
		var out []string
		for _, p := range ps {
			if p.Kind == "broken-config" && !strings.HasPrefix(p.File, w.confDir) {
				t.Errorf("broken-config names no file: %+v", p)
			}
			out = append(out, p.Kind+" "+p.ContainerID)
		}
		slices.Sort(out)
		if (r.exit != 0) != (len(out) > 0) {
			t.Fatalf("audit exit %d with %d problems", r.exit, len(out))
		}
		return out
	}

	// list: every attachment, live or not.
	r := op("list", "--json")
	var atts []struct {
		Network, ContainerID, HostLink, Netns string
		NetnsExists                           bool
		Addresses, Ports                      []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &atts); err != nil || r.exit != 0 {
		t.Fatalf("list --json: %v %s %s", err, r.stdout, r.stderr)
	}
	seen := map[string]bool{}
	for _, a := range atts {
		seen[a.ContainerID] = true
		if a.ContainerID == "live-ours" && (!a.NetnsExists || a.HostLink == "" || len(a.Addresses) != 1 ||
			!slices.Equal(a.Ports, []string{"8080/tcp -> " + a.Addresses[0] + ":80"})) {
			t.Fatalf("live attachment listed as %+v", a)
		}
	}
	for _, id := range []string{"live-ours", "gone-ours", "live-ref", "gone-ref", "gone-cache", "live-noresv", "live-tiny", "rebooted", "unverified"} {
		if !seen[id] {
			t.Errorf("list lacks %s: %s", id, r.stdout)
		}
	}
	if r := op("list"); !strings.Contains(r.stdout, "NETWORK") || !strings.Contains(r.stdout, "(gone)") {
		t.Errorf("list table: %s", r.stdout)
	}
	if r := op("pools"); !strings.Contains(r.stdout, w.netName("op-tiny")) {
		t.Errorf("pools: %s", r.stdout)
	}

	want := []string{"broken-config ", "link-without-reservation live-noresv", "nat-without-attachment ", "nat-without-attachment ", "nat-without-attachment ", "orphan-reservation gone-ours", "orphan-reservation gone-ref",
		"pool-nearly-full ", "port-mappings-without-attachment ", "reservation-before-boot rebooted", "reservation-unverified unverified", "retired-link ", "stale-cache gone-cache", "unknown-key "}
	if got := kinds(); !slices.Equal(got, want) {
		t.Fatalf("audit found\n%q\nwant\n%q", got, want)
	}
	if r := op("repair"); r.exit != 0 || !strings.Contains(r.stdout, "would  orphan-reservation") {
		t.Fatalf("repair dry run: %s %s", r.stdout, r.stderr)
	}
	if got := kinds(); !slices.Equal(got, want) {
		t.Fatalf("a dry run changed something: %q", got)
	}
	if r := op("repair", "--yes"); r.exit != 0 {
		t.Fatalf("repair --yes: %s %s", r.stdout, r.stderr)
	}
	// What repair leaves: the stray chain, whose network it cannot name.
	left := []string{"broken-config ", "link-without-reservation live-noresv", "nat-without-attachment ", "pool-nearly-full ", "reservation-unverified unverified", "unknown-key "}
	if got := kinds(); !slices.Equal(got, left) {
		t.Fatalf("after repair --yes\n%q\nwant what repair leaves alone\n%q", got, left)
	}
	// The live attachments are whole.
	for _, c := range []struct {
		list *libcni.NetworkConfigList
		id   string
	}{{ours, "live-ours"}, {ref, "live-ref"}} {
		if err := w.check(c.list, w.rt(c.id, pods[c.id], "eth0")); err != nil {
			t.Errorf("CHECK %s after repair: %v", c.id, err)
		}
	}
	if out := w.masqState(t); !strings.Contains(out, `id: \"live-ref\"`) || strings.Contains(out, `id: \"gone-ref\"`) {
		t.Errorf("reference masquerade state after repair:\n%s", out)
	}
	// The forwards of the repaired attachment and the stray one went; the
	// live one's stayed.
	_ = w.inHost(func() error {
		out, _ := exec.Command("nft", "list", "table", "inet", "netns-cni-"+w.netName("op-ours")).CombinedOutput()
		if !strings.Contains(string(out), "8080") || strings.Contains(string(out), "8081") || strings.Contains(string(out), "9999") {
			t.Errorf("forwards after repair:\n%s", out)
		}
		// The unused network's iptables chains went; the stray one stays.
		nat4, _ := exec.Command("iptables-save").CombinedOutput()
		if strings.Contains(string(nat4), nat.ChainName(iptLeft)) || strings.Contains(string(nat4), filter.ForwardChain(iptLeft)) ||
			!strings.Contains(string(nat4), "NETNS-CNI-0123456789ABCDE") {
			t.Errorf("iptables after repair:\n%s", nat4)
		}
		return nil
	})
}

// TestAuditWithoutNetAdmin: run without CAP_NET_ADMIN (an unprivileged
// kubectl debug pod), audit cannot read the host's nftables rules; it says
// so, rather than "nothing wrong".
func TestAuditWithoutNetAdmin(t *testing.T) {
	nstest.NeedCommand(t, "setpriv", "apt-get install util-linux")
	w := newWorld(t)
	var out []byte
	var runErr error
	if err := w.inHost(func() error {
		// Root gets its inheritable set and the bounding set across exec:
		// both lose the capability.
		out, runErr = exec.Command("setpriv", "--inh-caps", "-all", "--bounding-set", "-net_admin", filepath.Join(binDir, "netns-cni"),
			"--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "audit").CombinedOutput()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Exit status 1: a problem found.
	if runErr == nil || !strings.Contains(string(out), "unreadable-rules") || !strings.Contains(string(out), "--profile=sysadmin") {
		t.Fatalf("audit without CAP_NET_ADMIN: %v\n%s", runErr, out)
	}
}

// TestAuditDuplicateNetwork: two files with one network name (an upgrade
// that renamed the file leaves both): runtimes load the first, so the
// operator command lists the network once, each address once, and audit
// names the second file.
func TestAuditDuplicateNetwork(t *testing.T) {
	w := newWorld(t)
	list := w.list("1.1.0", "dup", w.ptpConf("veth-ptp", families[0], `"ipMasq":true`))
	rt := w.rt("c-dup", w.sb.PodT(t, "p"), "eth0")
	res, err := w.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(w.confDir, "zz-"+list.Name+".conflist")
	if err := os.WriteFile(again, list.Bytes, 0o600); err != nil {
		t.Fatal(err)
	}
	op := func(args ...string) execResult {
		return w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", append([]string{"--conf-dir", w.confDir, "--cache-dir", w.cacheDir}, args...)...)
	}
	addr := res.IPs[0].Address.IP.String()
	if r := op("list", "--json"); r.exit != 0 || strings.Count(r.stdout, `"`+addr+`"`) != 1 {
		t.Fatalf("list: exit %d, %s listed %d times, want once:\n%s", r.exit, addr, strings.Count(r.stdout, `"`+addr+`"`), r.stdout)
	}
	if r := op("pools", "--json"); strings.Count(r.stdout, list.Name) != 1 {
		t.Fatalf("pools lists %s %d times:\n%s", list.Name, strings.Count(r.stdout, list.Name), r.stdout)
	}
	r := op("audit", "--json")
	if r.exit != 1 || !strings.Contains(r.stdout, `"duplicate-network"`) || !strings.Contains(r.stdout, again) {
		t.Fatalf("audit: exit %d, want 1 naming %s as duplicate-network:\n%s%s", r.exit, again, r.stdout, r.stderr)
	}
	if err := os.Remove(again); err != nil {
		t.Fatal(err)
	}
	// A .conf sorting first is still the one libcni passes over: a
	// .conflist of the name wins.
	old := filepath.Join(w.confDir, "00-"+list.Name+".conf")
	conf := strings.Replace(string(list.Plugins[0].Bytes), "{", fmt.Sprintf(`{"cniVersion":%q,"name":%q,`, list.CNIVersion, list.Name), 1)
	if err := os.WriteFile(old, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r = op("audit", "--json")
	var problems []struct{ Kind, File string }
	if err := json.Unmarshal([]byte(r.stdout), &problems); err != nil || r.exit != 1 || len(problems) != 1 || problems[0].File != old {
		t.Fatalf("audit with an older .conf of the network: exit %d, %v, want 1 naming %s as the dead file:\n%s", r.exit, err, old, r.stdout)
	}
	if err := os.Remove(old); err != nil {
		t.Fatal(err)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestAuditRulesMissing: a firewall reload flushes the host's ruleset
// under a live pod with ipMasq and a host port: audit names both the
// network's missing masquerade rules and the pod's missing forward — and,
// when only the rules went and the forwards' maps stayed, that nothing
// leads to the forwards (that used to pass unseen).
func TestAuditRulesMissing(t *testing.T) {
	w := newWorld(t)
	// A range set of two subnets: the pod's addresses are in the first,
	// so the second has no masquerade rule, and needs none.
	list := w.list("1.1.0", "flushed", fmt.Sprintf(`{"type":"veth-ptp",%s,"ipMasq":true,"ipam":{"type":"host-local","dataDir":%q,
		"ranges":[[{"subnet":"10.10.0.0/24"},{"subnet":"10.14.0.0/24"}]]}}`, capPorts, filepath.Join(w.sb.Dir, "ipam")))
	rt := withPorts(w.rt("c-flushed", w.sb.PodT(t, "p"), "eth0"), tcpPort(8080, 80))
	if _, err := w.add(list, rt); err != nil {
		t.Fatal(err)
	}
	// A mapping of IPv6 host addresses only, to an IPv4-only pod: ADD makes
	// no forward of it, and audit must not ask for one.
	rt6 := withPorts(w.rt("c-v6-only-port", w.sb.PodT(t, "q"), "eth0"), map[string]any{"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": "::"})
	if _, err := w.add(list, rt6); err != nil {
		t.Fatal(err)
	}
	audit := func() execResult {
		return w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", "--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "audit", "--json")
	}
	if r := audit(); r.exit != 0 {
		t.Fatalf("audit of whole pods: exit %d\n%s", r.exit, r.stdout)
	}
	if err := w.del(list, rt6); err != nil {
		t.Fatal(err)
	}
	// The table stays, emptied of rules (a reload that flushed them).
	if err := w.inHost(func() error { return exec.Command("nft", "flush", "table", "inet", nat.TableName(list.Name)).Run() }); err != nil {
		t.Fatal(err)
	}
	if r := audit(); r.exit != 1 || strings.Count(r.stdout, `"rules-missing"`) != 2 || !strings.Contains(r.stdout, "lacks the masquerade rule for 10.10.0.0/24") ||
		!strings.Contains(r.stdout, "lacks the rules of the port mappings: no traffic reaches the forwards") {
		t.Fatalf("audit after the network's table was flushed: exit %d, want 1 naming the masquerade rule and the port mappings' rules:\n%s%s", r.exit, r.stdout, r.stderr)
	}
	// All of it gone.
	if err := w.inHost(func() error { return exec.Command("nft", "flush", "ruleset").Run() }); err != nil {
		t.Fatal(err)
	}
	r := audit()
	if r.exit != 1 || strings.Count(r.stdout, `"rules-missing"`) != 2 || !strings.Contains(r.stdout, "unmasqueraded") ||
		!strings.Contains(r.stdout, "1 host port mapping(s), and no forward") {
		t.Fatalf("audit after the ruleset was flushed: exit %d, want 1 with the masquerade rules and the forward missing:\n%s%s", r.exit, r.stdout, r.stderr)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if r := audit(); r.exit != 0 {
		t.Fatalf("audit after the DEL: exit %d\n%s", r.exit, r.stdout)
	}
}

// TestAuditPortConflict: two networks forwarding one host port (what
// versions before the cross-network check could leave behind): audit
// names both forwards.
func TestAuditPortConflict(t *testing.T) {
	w := newWorld(t)
	var lists []*libcni.NetworkConfigList
	for i, subnet := range []string{"10.41.0.0/24", "10.42.0.0/24"} {
		lists = append(lists, w.list("1.1.0", fmt.Sprintf("pc%d", i), fmt.Sprintf(`{"type":"veth-ptp",%s,"ipam":{"type":"host-local","dataDir":%q,"subnet":%q}}`,
			capPorts, filepath.Join(w.sb.Dir, "ipam"), subnet)))
	}
	rt := withPorts(w.rt("pc-a", w.sb.PodT(t, "a"), "eth0"), tcpPort(9090, 80))
	if _, err := w.add(lists[0], rt); err != nil {
		t.Fatal(err)
	}
	audit := func() execResult {
		return w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", "--conf-dir", w.confDir, "--cache-dir", w.cacheDir, "audit", "--json")
	}
	if r := audit(); strings.Contains(r.stdout, "port-conflict") {
		t.Fatalf("audit with one forward:\n%s", r.stdout)
	}
	// The second network's forward of the same port, as an older version
	// wrote it (no check across networks).
	second := hostport.Spec{Network: netconf.Key(lists[1].Name), Owner: "old/eth0",
		Entries: hostport.Plan([]hostport.Mapping{{HostPort: 9090, ContainerPort: 80}}, []netip.Addr{netip.MustParseAddr("10.42.0.9")})}
	b, _ := hostport.New(hostport.NFTables)
	if err := w.inHost(func() error { return b.Add(second) }); err != nil {
		t.Fatal(err)
	}
	r := audit()
	if r.exit != 1 || !strings.Contains(r.stdout, `"port-conflict"`) || !strings.Contains(r.stdout, "old/eth0") || !strings.Contains(r.stdout, lists[0].Name) {
		t.Fatalf("audit with two networks forwarding port 9090: exit %d\n%s%s", r.exit, r.stdout, r.stderr)
	}
	if err := w.inHost(func() error { return b.Drop(netconf.Key(lists[1].Name)) }); err != nil {
		t.Fatal(err)
	}
	if err := w.del(lists[0], rt); err != nil {
		t.Fatal(err)
	}
}

// TestAuditNetworkRenamedUnderALivePod: the conflist's name changes while a
// pod of the old name runs (iptables backend: its chains are named by a
// hash of the network's name). list showed the pod without its host link,
// and audit called the old network's chains strays of "a network in no
// conflist" to remove by hand — rules the live pod needs. Now list shows
// the pod with its host link under the old name, the chains are the old
// network's, and audit names the pod's network as configured nowhere and
// its store (no DEL through the new name releases from it), neither
// repairable; repair --yes leaves the pod whole.
func TestAuditNetworkRenamedUnderALivePod(t *testing.T) {
	w := newWorld(t)
	old := w.netName("before")
	text := func(name string) string {
		return fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"plugins":[%s]}`, name, w.ptpConf("veth-ptp", families[0], `"ipMasq":true,"ipMasqBackend":"iptables"`))
	}
	list := w.confList(text(old))
	pod := w.sb.PodT(t, "p")
	rt := w.rt("c-renamed", pod, "eth0")
	if _, err := w.add(list, rt); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(w.confDir, old+".conflist")); err != nil {
		t.Fatal(err)
	}
	renamed := w.confList(text(w.netName("after")))
	op := func(args ...string) execResult {
		return w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", append([]string{"--conf-dir", w.confDir, "--cache-dir", w.cacheDir}, args...)...)
	}
	var listed []struct{ Network, ContainerID, HostLink string }
	r := op("list", "--json")
	if err := json.Unmarshal([]byte(r.stdout), &listed); err != nil || len(listed) != 1 || listed[0].Network != old || listed[0].HostLink == "" {
		t.Fatalf("list: %v, want the pod under %s with its host link:\n%s", err, old, r.stdout)
	}
	r = op("audit", "--json")
	var problems []struct {
		Kind, Network string
		Repairable    bool
	}
	if err := json.Unmarshal([]byte(r.stdout), &problems); err != nil || r.exit != 1 || len(problems) != 2 ||
		problems[0].Kind != "network-not-configured" || problems[1].Kind != "store-without-network" ||
		problems[0].Network != old || problems[1].Network != old || problems[0].Repairable || problems[1].Repairable {
		t.Fatalf("audit: exit %d, %v, want network-not-configured and store-without-network of %s, neither repairable:\n%s", r.exit, err, old, r.stdout)
	}
	if r := op("repair", "--yes"); r.exit == 2 {
		t.Fatalf("repair: %s%s", r.stdout, r.stderr)
	}
	if err := ping(t, pod, "10.10.0.1"); err != nil {
		t.Fatalf("after repair the pod no longer reaches its gateway: %v", err)
	}
	if err := w.check(list, rt); err != nil {
		t.Fatalf("CHECK through the old config after repair: %v", err)
	}
	// The DEL through the new name leaves the old network's link (another
	// network's attachment); the old config removes it all.
	if err := w.del(renamed, rt); err != nil {
		t.Fatal(err)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if r := op("audit", "--json"); r.exit != 0 {
		t.Fatalf("audit after the DEL through the old config: exit %d\n%s", r.exit, r.stdout)
	}
}

// TestAuditAddressProblems: what versions before the route fix could do
// to live pods, planted by hand — one address held by pods of two
// networks (their stores both reserve it), and a veth-ptp pod whose host
// route leads through another pod's link — is named by audit, pod by pod,
// where it said "nothing wrong" while CHECK failed.
func TestAuditAddressProblems(t *testing.T) {
	w := newWorld(t)
	fam := func(subnet string) family { return family{"v4", fmt.Sprintf(`[[{"subnet":%q}]]`, subnet), true, false} }
	sa := w.list("1.1.0", "sa", w.ptpConf("veth-ptp", fam("10.10.0.0/24"), ""))
	sb := w.list("1.1.0", "sb", w.ptpConf("veth-ptp", fam("10.11.0.0/24"), ""))
	rtA, rtB := w.rt("c-a", w.sb.PodT(t, "a"), "eth0"), w.rt("c-b", w.sb.PodT(t, "b"), "eth0")
	resA, err := w.add(sa, rtA)
	if err != nil {
		t.Fatal(err)
	}
	resB, err := w.add(sb, rtB)
	if err != nil {
		t.Fatal(err)
	}
	op := func(args ...string) execResult {
		return w.exec("netns-cni", []string{"PATH=" + os.Getenv("PATH")}, "", append([]string{"--conf-dir", w.confDir, "--cache-dir", w.cacheDir}, args...)...)
	}
	if r := op("audit", "--json"); r.exit != 0 {
		t.Fatalf("audit of two whole pods: exit %d\n%s", r.exit, r.stdout)
	}
	addrA, addrB := resA.IPs[0].Address.IP.String(), resB.IPs[0].Address.IP.String()
	storeB := filepath.Join(w.sb.Dir, "ipam", sb.Name)
	owner, err := os.ReadFile(filepath.Join(storeB, addrB))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(storeB, addrA), owner, 0o600); err != nil {
		t.Fatal(err)
	}
	r := op("audit", "--json")
	var problems []struct{ Kind, Network, ContainerID, Detail string }
	if err := json.Unmarshal([]byte(r.stdout), &problems); err != nil || r.exit != 1 {
		t.Fatalf("audit: exit %d, %v\n%s", r.exit, err, r.stdout)
	}
	kinds := map[string]string{}
	for _, p := range problems {
		kinds[p.Kind+" "+p.ContainerID] = p.Detail
	}
	if d := kinds["duplicate-address "]; !strings.Contains(d, addrA) || !strings.Contains(d, "c-a/eth0") || !strings.Contains(d, "c-b/eth0") {
		t.Errorf("audit does not name %s as held by both pods:\n%s", addrA, r.stdout)
	}
	if _, ok := kinds["host-route-missing c-b"]; !ok || len(problems) != 2 {
		t.Errorf("audit, want duplicate-address and c-b's host-route-missing (its planted %s has no route) only:\n%s", addrA, r.stdout)
	}
	if err := os.Remove(filepath.Join(storeB, addrA)); err != nil {
		t.Fatal(err)
	}
	// A's host route taken by B's link, as a second network's ADD did.
	if err := w.inHost(func() error {
		out, err := exec.Command("ip", "route", "replace", addrA+"/32", "dev", resB.Interfaces[0].Name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r = op("audit", "--json")
	problems = nil
	if err := json.Unmarshal([]byte(r.stdout), &problems); err != nil || r.exit != 1 || len(problems) != 1 ||
		problems[0].Kind != "host-route-missing" || problems[0].ContainerID != "c-a" {
		t.Fatalf("audit with A's host route through B's link: exit %d, %v, want host-route-missing of c-a:\n%s", r.exit, err, r.stdout)
	}
	for _, c := range []struct {
		list *libcni.NetworkConfigList
		rt   *libcni.RuntimeConf
	}{{sa, rtA}, {sb, rtB}} {
		if err := w.del(c.list, c.rt); err != nil {
			t.Fatal(err)
		}
	}
	if r := op("audit", "--json"); r.exit != 0 {
		t.Fatalf("audit after the DELs: exit %d\n%s", r.exit, r.stdout)
	}
}
