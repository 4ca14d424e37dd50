package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// pluginStdin is a single plugin's config, as a runtime hands it over.
func (w *world) pluginStdin(version, name, plugin string, fam family, extra string) string {
	return fmt.Sprintf(`{"cniVersion":%q,"name":%q,%s`, version, w.netName(name), strings.TrimPrefix(w.ptpConf(plugin, fam, extra), "{"))
}

func (w *world) pluginEnv(cmd, id string, netns, ifname string, extra ...string) []string {
	return append([]string{"CNI_COMMAND=" + cmd, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns,
		"CNI_IFNAME=" + ifname, "CNI_PATH=" + binDir + ":" + refDir, "PATH=" + os.Getenv("PATH")}, extra...)
}

// TestVethPTPSecondAddFailsAndKeepsTheFirst: the spec requires ADD to fail
// when the interface exists; the existing attachment must stay whole.
func TestVethPTPSecondAddFailsAndKeepsTheFirst(t *testing.T) {
	w := newWorld(t)
	list := w.list("1.1.0", "twice", w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	pod := w.sb.PodT(t, "pod")
	rt := w.rt("ctr", pod, "eth0")
	res, err := w.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	stdin := w.pluginStdin("1.1.0", "twice", "veth-ptp", families[2], `"ipMasq":true`)
	r := w.exec("veth-ptp", w.pluginEnv("ADD", "ctr", pod.Path(), "eth0"), stdin)
	// Code 4, naming the variable: the runtime asked for a taken name.
	if e := r.cniError(t); e.Code != 4 || !strings.Contains(e.Msg, "CNI_IFNAME eth0 already exists") {
		t.Fatalf("second ADD: %+v", e)
	}
	if err := w.check(list, rt); err != nil {
		t.Fatalf("the first attachment is damaged: %v", err)
	}
	for _, ip := range res.IPs {
		if err := ping(t, pod, ip.Gateway.String()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestVethPTPDelWithoutPrevResult runs DEL by hand with the bare config,
// as a runtime that lost its cache would.
func TestVethPTPDelWithoutPrevResult(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.0.0", "bare", w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	stdin := w.pluginStdin("1.0.0", "bare", "veth-ptp", families[2], `"ipMasq":true`)
	pod := w.sb.PodT(t, "pod")
	if _, err := w.add(list, w.rt("ctr", pod, "eth0")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if r := w.exec("veth-ptp", w.pluginEnv("DEL", "ctr", pod.Path(), "eth0"), stdin); r.exit != 0 {
			t.Fatalf("DEL %d: %s %s", i, r.stdout, r.stderr)
		}
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("DEL without prevResult left:\n%s", stateDiff(before, after))
	}
}

// TestVethPTPParallelAdds: 32 ADDs at once get 32 distinct addresses.
func TestVethPTPParallelAdds(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.1.0", "par", w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	const n = 32
	pods := make([]*nsutil.NS, n)
	for i := range n {
		pods[i] = w.sb.PodT(t, fmt.Sprintf("p%02d", i))
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.add(list, w.rt(fmt.Sprintf("c%02d", i), pods[i], "eth0"))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, ip := range res.IPs {
				if j, dup := seen[ip.Address.IP.String()]; dup {
					errs <- fmt.Errorf("%s handed to containers %d and %d", ip.Address.IP, j, i)
				}
				seen[ip.Address.IP.String()] = i
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != 2*n {
		t.Fatalf("%d distinct addresses, want %d", len(seen), 2*n)
	}
	var dwg sync.WaitGroup
	for i := range n {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if err := w.del(list, w.rt(fmt.Sprintf("c%02d", i), pods[i], "eth0")); err != nil {
				t.Errorf("DEL: %v", err)
			}
		}()
	}
	dwg.Wait()
	if after := w.settled(t, before); after != before {
		t.Fatalf("after 32 DELs:\n%s", stateDiff(before, after))
	}
}

func TestVethPTPGCAndStatus(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.1.0", "gc", w.ptpConf("veth-ptp", family{"v4", `[[{"subnet":"10.10.0.0/29"}]]`, true, false}, `"ipMasq":true`))
	var pods []*nsutil.NS
	for i := range 3 {
		pods = append(pods, w.sb.PodT(t, fmt.Sprintf("p%d", i)))
		if _, err := w.add(list, w.rt(fmt.Sprintf("c%d", i), pods[i], "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.status(list); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	// A GC whose list of attachments to keep is missing or does not
	// decode removes nothing: read leniently, it would keep nothing.
	plugin := strings.TrimSuffix(strings.TrimSpace(string(list.Plugins[0].Bytes)), "}") +
		`,"cniVersion":"1.1.0","name":"` + list.Name + `"`
	for _, bad := range []string{
		``,
		`,"cni.dev/valid-attachments":{"containerID":"c0","ifname":"eth0"}`,
		`,"cni.dev/valid-attachments":"c0"`,
		`,"cni.dev/valid-attachments":[{"containerID":"c0"}]`,
	} {
		e := w.exec("veth-ptp", w.pluginEnv("GC", "", "", ""), plugin+bad+"}").cniError(t)
		if e.Code != 7 || !strings.Contains(e.Msg, "cni.dev/valid-attachments") || !strings.Contains(e.Msg, "nothing was removed") {
			t.Fatalf("GC with %q: %+v", bad, e)
		}
		for i, p := range pods {
			if err := w.check(list, w.rt(fmt.Sprintf("c%d", i), p, "eth0")); err != nil {
				t.Fatalf("GC with %q removed c%d: %v", bad, i, err)
			}
		}
	}
	// GC keeps the valid attachment only.
	if err := w.gc(list, types.GCAttachment{ContainerID: "c0", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := linkNames(t, pods[1]); len(got) != 1 {
		t.Fatalf("GC left pod 1 with %v", got)
	}
	if err := w.check(list, w.rt("c0", pods[0], "eth0")); err != nil {
		t.Fatalf("GC damaged the valid attachment: %v", err)
	}
	// Fill the /29 (5 usable addresses): STATUS reports 50.
	for i := 3; i < 7; i++ {
		p := w.sb.PodT(t, fmt.Sprintf("p%d", i))
		if _, err := w.add(list, w.rt(fmt.Sprintf("c%d", i), p, "eth0")); err != nil {
			t.Fatal(err)
		}
	}
	err := w.status(list)
	var ce *types.Error
	if !asCNIError(err, &ce) || ce.Code != 50 || !strings.Contains(ce.Msg, "10.10.0.1-10.10.0.6") {
		t.Fatalf("STATUS on a full pool: %v", err)
	}
	if err := w.gc(list); err != nil {
		t.Fatal(err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("after GC of everything:\n%s", stateDiff(before, after))
	}
}

func asCNIError(err error, out **types.Error) bool {
	return errors.As(err, out)
}

func TestVethPTPBadInput(t *testing.T) {
	w := newWorld(t)
	pod := w.sb.PodT(t, "pod")
	before := w.hostState(t)
	for _, tc := range []struct {
		name, extra, ranges string
		env                 []string
		code                uint
		msgHas              string
	}{
		{"mtu", `"mtu":9`, "", nil, 7, `"mtu": must be 68-65535, got 9`},
		{"mtu 20", `"mtu":20,"ipMasq":true`, "", nil, 7, `"mtu": must be 68-65535, got 20`},
		{"wrong type", `"mtu":"big"`, "", nil, 6, `"mtu": want int, got string`},
		{"log level", `"logLevel":"loud"`, "", nil, 7, `"logLevel"`},
		{"nonMasqueradeCIDRs", `"ipMasq":true,"nonMasqueradeCIDRs":["10.0.0.0/33"]`, "", nil, 7, `"nonMasqueradeCIDRs[0]"`},
		{"backend", `"ipMasq":true,"ipMasqBackend":"pf"`, "", nil, 7, `"ipMasqBackend"`},
		{"mac", `"runtimeConfig":{"mac":"zz"}`, "", nil, 7, `"runtimeConfig.mac"`},
		{"multicast mac", `"args":{"cni":{"mac":"01:00:5e:00:00:01"}}`, "", nil, 7, `"args.cni.mac"`},
		{"host bits", "", `[[{"subnet":"10.10.0.1/24"}]]`, nil, 7, `"ipam.ranges[0][0].subnet"`},
		{"broadcast range", "", `[[{"subnet":"10.50.0.0/24","rangeStart":"10.50.0.255","rangeEnd":"10.50.0.255"}]]`, nil, 7, `"ipam.ranges[0][0].rangeStart": 10.50.0.255 is the broadcast address`},
		{"network range", "", `[[{"subnet":"10.50.1.0/24","rangeStart":"10.50.1.0","rangeEnd":"10.50.1.0"}]]`, nil, 7, `10.50.1.0 is the network address`},
		{"requested outside", "", "", []string{"CNI_ARGS=IP=10.99.0.1"}, 7, "outside every range"},
		{"netns directory", "", "", []string{"CNI_NETNS=" + w.sb.Dir}, 4, "a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fam := families[0]
			if tc.ranges != "" {
				fam.ranges = tc.ranges
			}
			stdin := w.pluginStdin("1.1.0", "bad", "veth-ptp", fam, tc.extra)
			env := w.pluginEnv("ADD", "ctr", pod.Path(), "eth0", tc.env...)
			e := w.exec("veth-ptp", env, stdin).cniError(t)
			if e.Code != tc.code || !strings.Contains(e.Msg, tc.msgHas) {
				t.Fatalf("got %d %q, want %d with %q", e.Code, e.Msg, tc.code, tc.msgHas)
			}
			// The DEL a runtime sends after a failed ADD succeeds: a DEL
			// error would leave the pod stuck Terminating.
			env[0] = "CNI_COMMAND=DEL"
			if r := w.exec("veth-ptp", env, stdin); r.exit != 0 {
				t.Fatalf("DEL after the failed ADD: %s", r.stdout)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("bad input left:\n%s", stateDiff(before, after))
			}
			if got := linkNames(t, pod); len(got) != 1 {
				t.Fatalf("pod left with %v", got)
			}
		})
	}
	// No ipam at all.
	stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"veth-ptp"}`, w.netName("noipam"))
	if e := w.exec("veth-ptp", w.pluginEnv("ADD", "ctr", pod.Path(), "eth0"), stdin).cniError(t); e.Code != 7 || !strings.Contains(e.Msg, `"ipam": missing`) {
		t.Fatalf("no ipam: %+v", e)
	}
	// A route of a family the network has no address of: no gateway to
	// route it through on a point-to-point link. Found after IPAM, undone.
	stdin = fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"veth-ptp","ipam":{"type":"host-local","dataDir":%q,"subnet":"10.10.0.0/24","routes":[{"dst":"::/0"}]}}`,
		w.netName("v6route"), filepath.Join(w.sb.Dir, "ipam"))
	if e := w.exec("veth-ptp", w.pluginEnv("ADD", "ctr", pod.Path(), "eth0"), stdin).cniError(t); e.Code != 7 || !strings.Contains(e.Msg, `"ipam.routes": ::/0: no gateway of its family`) {
		t.Fatalf("route without a gateway: %+v", e)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("route without a gateway left:\n%s", stateDiff(before, after))
	}
	// An IPAM plugin CNI_PATH does not have: code 7 naming the key, and
	// STATUS says the network cannot serve ADDs (50).
	stdin = fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"veth-ptp","ipam":{"type":"nosuch"}}`, w.netName("nosuch"))
	if e := w.exec("veth-ptp", w.pluginEnv("ADD", "ctr", pod.Path(), "eth0"), stdin).cniError(t); e.Code != 7 || !strings.Contains(e.Msg, `"ipam.type": no IPAM plugin "nosuch" in CNI_PATH`) {
		t.Fatalf("missing IPAM plugin: %+v", e)
	}
	if e := w.exec("veth-ptp", []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir}, stdin).cniError(t); e.Code != 50 || !strings.Contains(e.Msg, `"ipam.type"`) {
		t.Fatalf("STATUS with a missing IPAM plugin: %+v", e)
	}
	// CHECK of an attachment never made: code 3, unknown container.
	stdin = w.pluginStdin("1.1.0", "never", "veth-ptp", families[0], "")
	check := strings.TrimSuffix(stdin, "}") + `,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"` + pod.Path() +
		`"}],"ips":[{"address":"10.10.0.9/24","interface":0}]}}`
	if e := w.exec("veth-ptp", w.pluginEnv("CHECK", "never", pod.Path(), "eth0"), check).cniError(t); e.Code != 3 || !strings.Contains(e.Msg, "no attachment of container never") {
		t.Fatalf("CHECK of an attachment never made: %+v", e)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestVethPTPChainedWithPortmapAndTuning chains the reference portmap and
// tuning after veth-ptp: the port mapping reaches the container, tuning's
// sysctl lands in it, CHECK passes, DEL is clean.
func TestVethPTPChainedWithPortmapAndTuning(t *testing.T) {
	for _, p := range []string{"portmap", "tuning"} {
		nstest.NeedFile(t, filepath.Join(refDir, p), "make deps")
	}
	w := newWorld(t)
	out := w.outside(t)
	// Debian's reference plugins speak up to 1.0.0.
	list := w.list("1.0.0", "chain",
		w.ptpConf("veth-ptp", families[0], `"ipMasq":true`),
		`{"type":"portmap","capabilities":{"portMappings":true}}`,
		`{"type":"tuning","sysctl":{"net.ipv4.conf.eth0.rp_filter":"2"}}`)
	pod := w.sb.PodT(t, "pod")
	rt := w.rt("ctr", pod, "eth0")
	rt.CapabilityArgs = map[string]any{"portMappings": []map[string]any{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}}

	// A server in the container on port 80.
	ln := serve(t, pod, ":80")
	defer ln.Close()

	if _, err := w.add(list, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	got, err := fetch(out, "192.0.2.1:8080")
	if err != nil || got != "hello from the container\n" {
		t.Fatalf("port mapping 192.0.2.1:8080 -> container:80: %q, %v", got, err)
	}
	var rp string
	_ = pod.Do(func() error {
		b, _ := os.ReadFile("/proc/sys/net/ipv4/conf/eth0/rp_filter")
		rp = strings.TrimSpace(string(b))
		return nil
	})
	if rp != "2" {
		t.Fatalf("tuning's sysctl not applied: rp_filter=%q", rp)
	}
	// CHECK: Debian's portmap 1.1.1 cannot check itself (it looks for its
	// IPv4 rules with ip6tables and fails), so our plugin's CHECK runs alone
	// on the cached result of the whole chain, as libcni would hand it.
	cachedRes, err := w.cni.GetNetworkListCachedResult(list, rt)
	if err != nil || cachedRes == nil {
		t.Fatalf("cached result: %v", err)
	}
	var prev strings.Builder
	if err := cachedRes.PrintTo(&prev); err != nil {
		t.Fatal(err)
	}
	stdin := strings.TrimSuffix(w.pluginStdin("1.0.0", "chain", "veth-ptp", families[0], `"ipMasq":true`), "}") + `,"prevResult":` + prev.String() + "}"
	if r := w.exec("veth-ptp", w.pluginEnv("CHECK", "ctr", pod.Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("CHECK of veth-ptp after portmap and tuning: %s %s", r.stdout, r.stderr)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	// Our part is gone: no veth of ours, no reservation, no NAT table.
	state := w.hostState(t)
	if strings.Contains(state, "netns-cni:veth-ptp") || strings.Contains(state, "store ") || strings.Contains(state, "netns-cni-"+w.netName("chain")) {
		t.Fatalf("DEL left our state:\n%s", state)
	}
	var cached []string
	_ = filepath.Walk(w.cacheDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			cached = append(cached, p)
		}
		return nil
	})
	if len(cached) != 0 {
		t.Fatalf("libcni cache left: %v", cached)
	}
}

// TestVethPTPReAddRightAfterDel: DEL deletes in line, so when it returns
// nothing of the attachment is left for anyone to finish (older versions
// left the host end to a reaper process that could be killed), and an ADD
// of the same attachment right after finds nothing in its way.
func TestVethPTPReAddRightAfterDel(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.1.0", "readd", w.ptpConf("veth-ptp", families[2], `"ipMasq":true`))
	pod := w.sb.PodT(t, "pod")
	rt := w.rt("ctr", pod, "eth0")
	for i := range 5 {
		if _, err := w.add(list, rt); err != nil {
			t.Fatalf("ADD %d: %v", i, err)
		}
		if err := w.check(list, rt); err != nil {
			t.Fatalf("CHECK %d: %v", i, err)
		}
		if err := w.del(list, rt); err != nil {
			t.Fatalf("DEL %d: %v", i, err)
		}
		if after := w.hostState(t); after != before {
			t.Fatalf("right after DEL %d:\n%s", i, stateDiff(before, after))
		}
	}
	// The old reaper's variable does not turn an ADD into a no-op.
	stdin := w.pluginStdin("1.1.0", "readd", "veth-ptp", families[2], `"ipMasq":true`)
	r := w.exec("veth-ptp", w.pluginEnv("ADD", "ctr", pod.Path(), "eth0", "NETNS_CNI_REAP=1:x"), stdin)
	if r.exit != 0 || !strings.Contains(r.stdout, `"ips"`) {
		t.Fatalf("ADD with NETNS_CNI_REAP set: exit %d, %q", r.exit, r.stdout)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestLinksRetiredByOlderVersions: older versions' DEL left the host end
// down with the alias netns-cni:retired for a reaper process to delete; a
// reaper killed with the runtime's cgroup stranded it. Such a link is
// removed by the next ADD that needs its name, by the DEL of its
// attachment and by GC.
func TestLinksRetiredByOlderVersions(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.1.0", "retired", w.ptpConf("veth-ptp", families[0], `"ipMasq":true`))
	h, err := w.sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// strand retires the attachment's host link as an old DEL did before
	// handing it to its reaper.
	strand := func(id string) {
		t.Helper()
		l, err := h.LinkByName(netconf.HostVethName("vp", id, "eth0"))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetAlias(l, netconf.RetiredAlias); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*nsutil.NS{}
	for _, id := range []string{"for-add", "for-del", "for-gc"} {
		pods[id] = w.sb.PodT(t, id)
		if _, err := w.add(list, w.rt(id, pods[id], "eth0")); err != nil {
			t.Fatal(err)
		}
		strand(id)
	}
	// ADD: the name it needs is held by a retired pair; the ADD clears it.
	stdin := w.pluginStdin("1.1.0", "retired", "veth-ptp", families[0], `"ipMasq":true`)
	if r := w.exec("veth-ptp", w.pluginEnv("ADD", "for-add", pods["for-add"].Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("ADD over a retired pair: %s", r.stdout)
	}
	if l, err := h.LinkByName(netconf.HostVethName("vp", "for-add", "eth0")); err != nil || l.Attrs().Alias == netconf.RetiredAlias {
		t.Fatalf("ADD did not replace the retired link: %v", err)
	}
	// DEL of the attachment whose link was retired removes it.
	if err := w.del(list, w.rt("for-del", pods["for-del"], "eth0")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName(netconf.HostVethName("vp", "for-del", "eth0")); err == nil {
		t.Fatal("DEL left its retired link")
	}
	// GC removes every retired link: for-gc's, and one whose attachment
	// is in no store any more (an old reaper killed after the DEL); the
	// listed, live for-add keeps its link.
	if err := w.inHost(func() error {
		for _, c := range [][]string{{"link", "add", "vpstray0", "type", "veth", "peer", "name", "vpstray1"}, {"link", "set", "vpstray0", "alias", netconf.RetiredAlias}} {
			if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %w %s", c, err, out)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.gc(list, types.GCAttachment{ContainerID: "for-add", IfName: "eth0"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{netconf.HostVethName("vp", "for-gc", "eth0"), "vpstray0"} {
		if _, err := h.LinkByName(name); err == nil {
			t.Errorf("GC left the retired link %s", name)
		}
	}
	if _, err := h.LinkByName(netconf.HostVethName("vp", "for-add", "eth0")); err != nil {
		t.Errorf("GC removed the listed attachment's link: %v", err)
	}
	if r := w.exec("veth-ptp", w.pluginEnv("DEL", "for-add", pods["for-add"].Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("DEL: %s", r.stdout)
	}
	for _, id := range []string{"for-add", "for-gc"} {
		_ = w.del(list, w.rt(id, pods[id], "eth0")) // the runtime's cache entries
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// TestVethPTPOptionsAndChainPosition: mtu on both ends, the requested MAC,
// DNS from the config over IPAM's, and a correct result when veth-ptp is
// not first in the chain.
func TestVethPTPOptionsAndChainPosition(t *testing.T) {
	w := newWorld(t)
	list := w.list("1.0.0", "opts",
		`{"type":"loopback"}`,
		w.ptpConf("veth-ptp", families[2], `"mtu":1400,"capabilities":{"mac":true},"dns":{"nameservers":["10.0.0.53"],"search":["example.org"]}`))
	pod := w.sb.PodT(t, "pod")
	rt := w.rt("ctr", pod, "eth0")
	rt.CapabilityArgs = map[string]any{"mac": "02:00:00:aa:bb:cc"}
	res, err := w.add(list, rt)
	if err != nil {
		t.Fatal(err)
	}
	// [lo (from loopback), host veth, eth0]: veth-ptp's addresses point at eth0.
	if len(res.Interfaces) != 3 || res.Interfaces[0].Name != "lo" || res.Interfaces[2].Name != "eth0" {
		t.Fatalf("interfaces %+v", res.Interfaces)
	}
	for _, ip := range res.IPs {
		if ip.Address.IP.IsLoopback() {
			continue
		}
		if ip.Interface == nil || *ip.Interface != 2 {
			t.Fatalf("ip %s indexed to %v, want 2", ip.Address.String(), ip.Interface)
		}
	}
	if res.Interfaces[2].Mac != "02:00:00:aa:bb:cc" {
		t.Fatalf("container MAC %s, want the requested one", res.Interfaces[2].Mac)
	}
	if len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != "10.0.0.53" || res.DNS.Search[0] != "example.org" {
		t.Fatalf("dns %+v", res.DNS)
	}
	for _, side := range []struct {
		ns   *nsutil.NS
		name string
	}{{pod, "eth0"}, {w.sb.Host, res.Interfaces[1].Name}} {
		h, err := side.ns.Handle()
		if err != nil {
			t.Fatal(err)
		}
		l, err := h.LinkByName(side.name)
		h.Close()
		if err != nil || l.Attrs().MTU != 1400 {
			t.Fatalf("%s mtu: %v %v", side.name, l, err)
		}
	}
	if err := w.check(list, rt); err != nil {
		t.Fatalf("CHECK: %v", err)
	}

	// CHECK notices what goes missing on either side.
	breakIt := func(ns *nsutil.NS, args ...string) {
		t.Helper()
		if err := ns.Do(func() error { return exec.Command("ip", args...).Run() }); err != nil {
			t.Fatalf("ip %v: %v", args, err)
		}
	}
	var v4 string
	for _, ip := range res.IPs {
		if ip.Interface != nil && *ip.Interface == 2 && ip.Address.IP.To4() != nil {
			v4 = ip.Address.IP.String()
		}
	}
	breakIt(w.sb.Host, "route", "del", v4+"/32")
	if err := w.check(list, rt); err == nil || !strings.Contains(err.Error(), "host") {
		t.Fatalf("CHECK with the host route gone: %v", err)
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
	if _, err := w.add(list, rt); err != nil {
		t.Fatal(err)
	}
	breakIt(pod, "-6", "route", "del", "default")
	if err := w.check(list, rt); err == nil || !strings.Contains(err.Error(), "container") {
		t.Fatalf("CHECK with the container's default route gone: %v", err)
	}
	// The interface's MAC address, as prevResult has it (CHECK passed a
	// change before).
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"link", "set", "eth0", "address", "02:00:00:aa:bb:dd"}, "has MAC address 02:00:00:aa:bb:dd, prevResult says 02:00:00:aa:bb:cc"},
	} {
		if err := w.del(list, rt); err != nil {
			t.Fatal(err)
		}
		if _, err := w.add(list, rt); err != nil {
			t.Fatal(err)
		}
		breakIt(pod, tc.args...)
		if err := w.check(list, rt); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("CHECK after ip %v: %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := w.del(list, rt); err != nil {
		t.Fatal(err)
	}
}

// TestStatusNamesAMissingNATBackend: with ipMasqBackend iptables and no
// iptables binary to be found, STATUS answers 50 and says what is missing.
func TestStatusNamesAMissingNATBackend(t *testing.T) {
	w := newWorld(t)
	noIptables := withoutIptables(t, "veth-ptp", "bridge-nat")
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		stdin := w.pluginStdin("1.1.0", "st-"+plugin, plugin, families[0], `"ipMasq":true,"ipMasqBackend":"iptables"`)
		env := []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir, "PATH=" + os.Getenv("PATH")}
		e := w.execIn(noIptables, plugin, env, stdin).cniError(t)
		if e.Code != 50 || !strings.Contains(e.Msg, "iptables") {
			t.Fatalf("%s STATUS without iptables: %+v", plugin, e)
		}
		// A PATH without iptables is no reason to fail: it is in /usr/sbin.
		env[2] = "PATH=/nonexistent"
		if r := w.exec(plugin, env, stdin); r.exit != 0 {
			t.Fatalf("%s STATUS with iptables off the PATH: %s", plugin, r.stdout)
		}
	}
}

// TestVethPTPRoutesAsReference: like the reference ptp, veth-ptp installs
// exactly IPAM's routes, plus the point-to-point routes to the gateway: a
// config without routes gives no default route (a container on a second
// network keeps the first one's), one with routes gets them.
func TestVethPTPRoutesAsReference(t *testing.T) {
	w := newWorld(t)
	for _, tc := range []struct {
		name, routes string
		want         []string
	}{
		{"none", ``, []string{"10.10.0.0/24 via 10.10.0.1 dev eth0", "10.10.0.1 dev eth0 scope link"}},
		{"given", `,"routes":[{"dst":"0.0.0.0/0"},{"dst":"192.0.2.0/24","gw":"10.10.0.1"}]`,
			[]string{"10.10.0.0/24 via 10.10.0.1 dev eth0", "10.10.0.1 dev eth0 scope link", "192.0.2.0/24 via 10.10.0.1 dev eth0", "default via 10.10.0.1 dev eth0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := fmt.Sprintf(`{"type":"veth-ptp","ipam":{"type":"host-local","dataDir":%q,"subnet":"10.10.0.0/24"%s}}`,
				filepath.Join(w.sb.Dir, "ipam"), tc.routes)
			list := w.list("1.1.0", "routes-"+tc.name, conf)
			pod := w.sb.PodT(t, "p-"+tc.name)
			rt := w.rt("c-"+tc.name, pod, "eth0")
			res, err := w.add(list, rt)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			_ = pod.Do(func() error {
				out, err = exec.Command("ip", "-4", "route", "show").CombinedOutput()
				return nil
			})
			if err != nil {
				t.Fatalf("ip route: %v %s", err, out)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				got = append(got, strings.TrimSpace(strings.Split(l, " proto")[0]))
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("container routes %q, want %q", got, tc.want)
			}
			if want := strings.Count(tc.routes, "dst"); len(res.Routes) != want {
				t.Fatalf("result routes %v, want %d", res.Routes, want)
			}
			if err := w.check(list, rt); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := w.del(list, rt); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestDelegatedIPAMWithoutCNIPath: CNI_PATH is optional, but a delegated
// IPAM plugin is found through it: a DEL without it is code 4 naming it,
// before anything is removed, and the DEL with it removes everything.
func TestDelegatedIPAMWithoutCNIPath(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	pod := w.sb.PodT(t, "pod")
	stdin := `{"cniVersion":"1.0.0","name":"static-` + w.sb.ID + `","type":"veth-ptp","ipMasq":true,
		"ipam":{"type":"static","addresses":[{"address":"10.13.0.5/24","gateway":"10.13.0.1"}]}}`
	if r := w.exec("veth-ptp", w.pluginEnv("ADD", "c1", pod.Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("ADD: %s %s", r.stdout, r.stderr)
	}
	env := slices.DeleteFunc(w.pluginEnv("DEL", "c1", pod.Path(), "eth0"), func(kv string) bool { return strings.HasPrefix(kv, "CNI_PATH=") })
	r := w.exec("veth-ptp", env, stdin)
	if e := r.cniError(t); e.Code != 4 || !strings.Contains(e.Msg, "CNI_PATH") {
		t.Fatalf("DEL without CNI_PATH: code %d %q, want 4 naming CNI_PATH", e.Code, e.Msg)
	}
	if got := linkNames(t, pod); len(got) != 2 {
		t.Fatalf("DEL without CNI_PATH removed the pod's interface: %v", got)
	}
	if r := w.exec("veth-ptp", w.pluginEnv("DEL", "c1", pod.Path(), "eth0"), stdin); r.exit != 0 {
		t.Fatalf("DEL: %s", r.stdout)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("after the DEL:\n%s", stateDiff(before, after))
	}
}

// TestDelegatedIPAMOlderThanTheConfig: a delegated IPAM plugin that
// supports spec versions up to 1.0.0 (Debian's 1.1.1 host-local, under
// another name so it is delegated) made a pod's reservation; then the
// operator raised the conflist's cniVersion to 1.1.0. The plugin refuses
// 1.1.0, so DEL failed on every retry with code 1 and the address stayed
// held; GC and STATUS failed with the plugin's "missing containerID"
// (it knows neither verb). Now DEL is sent again at the version the
// plugin supports and releases the address; GC skips a plugin without
// GC; STATUS says, code 50, why no ADD can get addresses. An ADD at 1.1.0
// fails (code 1) and the DEL after it succeeds.
func TestDelegatedIPAMOlderThanTheConfig(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	ipamDir := filepath.Join(w.sb.Dir, "old-ipam")
	if err := os.MkdirAll(ipamDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(refDir, "host-local"), filepath.Join(ipamDir, "old-host-local")); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(w.sb.Dir, "ipam")
	name := "older-" + w.sb.ID
	conf := func(v string) string {
		return fmt.Sprintf(`{"cniVersion":%q,"name":%q,"type":"veth-ptp","ipMasq":true,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],
			"ipam":{"type":"old-host-local","dataDir":%q,"subnet":"10.14.0.0/24"}}`, v, name, dataDir)
	}
	env := func(cmd, id string, pod *nsutil.NS) []string {
		e := w.pluginEnv(cmd, id, pod.Path(), "eth0")
		for i, kv := range e {
			if strings.HasPrefix(kv, "CNI_PATH=") {
				e[i] = kv + ":" + ipamDir
			}
		}
		return e
	}
	pod, other := w.sb.PodT(t, "pod"), w.sb.PodT(t, "other")
	if r := w.exec("veth-ptp", env("ADD", "c1", pod), conf("1.0.0")); r.exit != 0 {
		t.Fatalf("ADD at 1.0.0: %s %s", r.stdout, r.stderr)
	}
	reservation := filepath.Join(dataDir, name, "10.14.0.2")
	if _, err := os.Stat(reservation); err != nil {
		t.Fatalf("the IPAM plugin's reservation: %v", err)
	}
	// The conflist now says 1.1.0.
	r := w.exec("veth-ptp", env("STATUS", "", pod), conf("1.1.0"))
	if e := r.cniError(t); e.Code != 50 || !strings.Contains(e.Msg, "old-host-local") || !strings.Contains(e.Msg, "1.1.0") {
		t.Fatalf("STATUS: code %d %q, want 50 naming the IPAM plugin and the version", e.Code, e.Msg)
	}
	if r := w.exec("veth-ptp", env("GC", "", pod), conf("1.1.0")); r.exit != 0 {
		t.Fatalf("GC keeping the pod: %s %s", r.stdout, r.stderr)
	}
	if got := linkNames(t, pod); len(got) != 2 {
		t.Fatalf("GC keeping the pod removed its interface: %v", got)
	}
	r = w.exec("veth-ptp", env("ADD", "c2", other), conf("1.1.0"))
	if e := r.cniError(t); e.Code != 1 {
		t.Fatalf("ADD at 1.1.0: code %d %q, want 1 (the IPAM plugin refuses the version)", e.Code, e.Msg)
	}
	for _, c := range []struct {
		id  string
		pod *nsutil.NS
	}{{"c2", other}, {"c1", pod}} {
		if r := w.exec("veth-ptp", env("DEL", c.id, c.pod), conf("1.1.0")); r.exit != 0 {
			t.Fatalf("DEL %s at 1.1.0: %s %s", c.id, r.stdout, r.stderr)
		}
	}
	if _, err := os.Stat(reservation); !os.IsNotExist(err) {
		t.Fatalf("the pod's address is still held after its DEL: %v", err)
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("after the DELs:\n%s", stateDiff(before, after))
	}
}

// TestLocksBusy: while another process holds a lock past lock.Timeout,
// an ADD or DEL answers code 11 naming the holder, having waited for a
// lock once: after a wait ran out, the rest of the verb (an ADD's
// rollback asking whether the network's rules must go, a DEL's network
// step) waits a second, not the full timeout again (they took 20 s).
// The failed ADD leaves nothing; the failed DEL keeps the address
// reserved while its port forward stays (it was released, and the next
// pod given that address got the old pod's host port); the DEL after the
// lock is free removes both. The bound counts waits, with a margin of
// seconds: it is no speed figure.
func TestLocksBusy(t *testing.T) {
	for _, tc := range []struct {
		name, verb string
		hold       func(network string) (func(), error)
	}{
		{"ADD/network", "ADD", lock.Network},
		{"ADD/host-ports", "ADD", func(string) (func(), error) { return lock.HostPorts() }},
		{"DEL/network", "DEL", lock.Network},
		{"GC/network", "GC", lock.Network},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			name := "busy-" + w.sb.ID
			stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":%q,"type":"veth-ptp","ipMasq":true,"capabilities":{"portMappings":true},
				"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]},
				"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.15.0.0/24"}}`, name, filepath.Join(w.sb.Dir, "ipam"))
			pod := w.sb.PodT(t, "pod")
			if tc.verb != "ADD" {
				if r := w.exec("veth-ptp", w.pluginEnv("ADD", "c1", pod.Path(), "eth0"), stdin); r.exit != 0 {
					t.Fatalf("ADD: %s %s", r.stdout, r.stderr)
				}
			}
			verbStdin := stdin
			if tc.verb == "GC" { // keeping nothing: c1 is collected
				verbStdin = strings.Replace(stdin, "{", `{"cni.dev/valid-attachments":[],`, 1)
			}
			unlock, err := tc.hold(name)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			r := w.exec("veth-ptp", w.pluginEnv(tc.verb, "c1", pod.Path(), "eth0"), verbStdin)
			took := time.Since(start)
			held := w.hostState(t)
			unlock()
			if e := r.cniError(t); e.Code != 11 || !strings.Contains(e.Msg, fmt.Sprint(os.Getpid())) {
				t.Fatalf("%s with the lock held: code %d %q, want 11 naming the holder (pid %d)", tc.verb, e.Code, e.Msg, os.Getpid())
			}
			if took > lock.Timeout+5*time.Second {
				t.Fatalf("%s took %v: it waited for a lock more than once (timeout %v)", tc.verb, took, lock.Timeout)
			}
			switch tc.verb {
			case "ADD":
				if got := linkNames(t, pod); len(got) != 1 {
					t.Fatalf("the failed ADD left %v in the pod", got)
				}
				if held != before {
					t.Fatalf("after the failed ADD:\n%s", stateDiff(before, held))
				}
			case "DEL", "GC":
				if _, err := os.Stat(filepath.Join(w.sb.Dir, "ipam", name, "10.15.0.2")); err != nil {
					t.Fatalf("the %s that could not remove the port forward released the address: %v", tc.verb, err)
				}
				if !strings.Contains(held, "8080") {
					t.Fatalf("no forward of host port 8080 after the failed DEL (the test looks in the wrong place?):\n%s", held)
				}
			}
			if r := w.exec("veth-ptp", w.pluginEnv("DEL", "c1", pod.Path(), "eth0"), stdin); r.exit != 0 {
				t.Fatalf("DEL: %s %s", r.stdout, r.stderr)
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("after the DEL:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestStatusWithABrokenLockDirectory: when no lock can be taken (the lock
// directory is a file, or a directory others may write), every ADD that
// changes host-wide state fails; STATUS says so first, code 50 naming the
// directory, for both plugins.
func TestStatusWithABrokenLockDirectory(t *testing.T) {
	w := newWorld(t)
	file, open := filepath.Join(w.sb.Dir, "lock-file"), filepath.Join(w.sb.Dir, "lock-open")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		stdin := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"lockdir-%s","type":%q,"bridge":"brlk0",
			"ipam":{"type":"host-local","dataDir":%q,"subnet":"10.16.0.0/24"}}`, w.sb.ID, plugin, filepath.Join(w.sb.Dir, "ipam"))
		if plugin == "veth-ptp" {
			stdin = strings.Replace(stdin, `"bridge":"brlk0",`, "", 1)
		}
		for _, dir := range []string{file, open} {
			var out bytes.Buffer
			cmd := exec.Command(filepath.Join(binDir, plugin))
			cmd.Env = []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir, lock.DirEnv + "=" + dir}
			cmd.Stdin, cmd.Stdout = strings.NewReader(stdin), &out
			_ = w.inHost(func() error { return cmd.Run() })
			r := execResult{stdout: out.String(), exit: cmd.ProcessState.ExitCode()}
			if e := r.cniError(t); e.Code != 50 || !strings.Contains(e.Msg, dir) {
				t.Errorf("%s STATUS with the lock directory %s: code %d %q, want 50 naming it", plugin, dir, e.Code, e.Msg)
			}
		}
		r := w.exec(plugin, []string{"CNI_COMMAND=STATUS", "CNI_PATH=" + binDir}, stdin)
		if r.exit != 0 {
			t.Errorf("%s STATUS with the test's lock directory: %s", plugin, r.stdout)
		}
	}
}
