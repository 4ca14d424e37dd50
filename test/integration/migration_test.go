package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// TestMigrationWithTheReference: a node switches between the reference
// plugins and netns-cni with live pods, both ways, on one network (same
// name, same host-local store). For the upstream reference at v1.10.0 and
// Debian's 1.1.1, ptp and bridge, IPv4 and dual-stack: the reference ADDs
// five pods, netns-cni five; netns-cni DELs three of the reference's, the
// reference three of netns-cni's; each ADDs one more; the rest go
// crosswise. No address is ever handed out twice, and at the end no
// reservation, veth, container interface, iptables or nftables rule, or
// libcni cache entry is left. Upstream runs once more with its
// ipMasqBackend "nftables" (a chain per attachment in its own table),
// which netns-cni's DEL of those pods removes as well.
//
// Debian's 1.1.1 fails the DEL of a netns-cni pod (it finds no chain of
// its own to tear down, after releasing the address and deleting the
// link); the test records it, and the runtime's retry succeeds.
func TestMigrationWithTheReference(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	refs := []struct{ name, dir, backend string }{
		{"upstream-v1.10.0", upstreamDir, ""},
		{"upstream-v1.10.0/nftables", upstreamDir, `,"ipMasqBackend":"nftables"`},
		{"debian-1.1.1", refDir, ""},
	}
	pairs := []struct{ ref, ours, extra string }{
		{"ptp", "veth-ptp", ""},
		{"bridge", "bridge-nat", `,"bridge":"brmig","isGateway":true`},
	}
	for _, ref := range refs {
		for _, p := range pairs {
			for _, fam := range []family{families[0], families[2]} {
				t.Run(ref.name+"/"+p.ref+"/"+fam.name, func(t *testing.T) {
					m := newMigration(t, ref.dir, p.ref, p.ours, p.extra+ref.backend, fam)
					for i := range 5 {
						m.add(m.ref, fmt.Sprintf("r%d", i))
						m.add(m.ours, fmt.Sprintf("o%d", i))
					}
					// netns-cni's CHECK of the reference's pods, through the
					// runtime's cached result: what runtimes that CHECK see
					// after the switch.
					for i := range 5 {
						m.check(m.ours, fmt.Sprintf("r%d", i))
					}
					m.breakReferenceHostLink("r4")
					m.dropReferenceHostLink("r3")
					for i := range 3 {
						m.del(m.ours, fmt.Sprintf("r%d", i))
						m.del(m.ref, fmt.Sprintf("o%d", i))
					}
					m.add(m.ref, "r5")
					m.add(m.ours, "o5")
					for _, i := range []int{3, 4, 5} {
						m.del(m.ref, fmt.Sprintf("o%d", i))
						m.del(m.ours, fmt.Sprintf("r%d", i))
					}
					m.finish()
				})
			}
		}
	}
}

// side is one plugin set acting on the migration's network.
type side struct {
	name string
	cni  *libcni.CNIConfig
	list *libcni.NetworkConfigList
}

type migration struct {
	*world
	t         *testing.T
	ref, ours *side
	refDir    string
	before    string
	pods      map[string]*nsutil.NS
	live      map[string][]string // container → addresses
	bridge    string
	nftRef    bool // the reference masquerades with nftables
}

func newMigration(t *testing.T, dir, refType, ourType, extra string, fam family) *migration {
	w := newWorld(t)
	m := &migration{world: w, t: t, refDir: dir, pods: map[string]*nsutil.NS{}, live: map[string][]string{}}
	m.nftRef = strings.Contains(extra, `"ipMasqBackend":"nftables"`)
	if strings.Contains(extra, `"brmig"`) {
		m.bridge = "brmig"
	}
	m.before = w.hostState(t)
	conf := func(typ string) *libcni.NetworkConfigList {
		// cniVersion 1.0.0: Debian's 1.1.1 plugins go no further.
		text := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[%s]}`, w.netName("mig"),
			w.ptpConf(typ, fam, `"ipMasq":true`+extra))
		list, err := libcni.ConfListFromBytes([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	// One libcni cache, as on a node: each DEL gets the prevResult of the
	// ADD, whichever plugin made it.
	m.ref = &side{"reference " + refType, libcni.NewCNIConfigWithCacheDir([]string{dir}, w.cacheDir, nil), conf(refType)}
	m.ours = &side{"netns-cni " + ourType, libcni.NewCNIConfigWithCacheDir([]string{binDir}, w.cacheDir, nil), conf(ourType)}
	return m
}

func (m *migration) add(s *side, id string) {
	m.t.Helper()
	pod := m.sb.PodT(m.t, "p-"+id)
	m.pods[id] = pod
	var res *current.Result
	err := m.inHost(func() error {
		r, err := s.cni.AddNetworkList(context.Background(), s.list, m.rt(id, pod, "eth0"))
		if err == nil {
			res, err = current.NewResultFromResult(r)
		}
		return err
	})
	if err != nil {
		m.t.Fatalf("%s ADD %s: %v", s.name, id, err)
	}
	for _, ip := range res.IPs {
		a := ip.Address.IP.String()
		for other, addrs := range m.live {
			for _, b := range addrs {
				if a == b {
					m.t.Fatalf("%s ADD %s got %s, which %s holds", s.name, id, a, other)
				}
			}
		}
		m.live[id] = append(m.live[id], a)
	}
}

func (m *migration) del(s *side, id string) {
	m.t.Helper()
	rt := m.rt(id, m.pods[id], "eth0")
	err := m.inHost(func() error { return s.cni.DelNetworkList(context.Background(), s.list, rt) })
	if err != nil && s == m.ref && m.refDir == refDir && strings.HasPrefix(id, "o") {
		// Debian's 1.1.1 DEL of a netns-cni pod: recorded, then retried.
		m.t.Logf("%s DEL of netns-cni's %s failed (README: migration): %v", s.name, id, err)
		err = m.inHost(func() error { return s.cni.DelNetworkList(context.Background(), s.list, rt) })
	}
	if err != nil {
		m.t.Fatalf("%s DEL %s: %v", s.name, id, err)
	}
	delete(m.live, id)
	// The container interface goes with the attachment, whoever made it.
	for deadline := time.Now().Add(5 * time.Second); len(linkNames(m.t, m.pods[id])) != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s DEL %s left the pod with %v", s.name, id, linkNames(m.t, m.pods[id]))
		}
	}
}

func (m *migration) check(s *side, id string) {
	m.t.Helper()
	if err := m.inHost(func() error {
		return s.cni.CheckNetworkList(context.Background(), s.list, m.rt(id, m.pods[id], "eth0"))
	}); err != nil {
		m.t.Fatalf("%s CHECK %s: %v", s.name, id, err)
	}
}

// breakReferenceHostLink sets the host end of the reference's pod id down:
// netns-cni's CHECK must say so, naming it; set up again afterwards.
func (m *migration) breakReferenceHostLink(id string) {
	m.t.Helper()
	name := m.hostEnd(id)
	if err := m.inHost(func() error { return exec.Command("ip", "link", "set", name, "down").Run() }); err != nil {
		m.t.Fatal(err)
	}
	err := m.inHost(func() error {
		return m.ours.cni.CheckNetworkList(context.Background(), m.ours.list, m.rt(id, m.pods[id], "eth0"))
	})
	if err == nil || !strings.Contains(err.Error(), name) {
		m.t.Fatalf("CHECK of %s with its host end %s down: %v, want an error naming it", id, name, err)
	}
	if err := m.inHost(func() error { return exec.Command("ip", "link", "set", name, "up").Run() }); err != nil {
		m.t.Fatal(err)
	}
	check := func() error {
		return m.inHost(func() error {
			return m.ours.cni.CheckNetworkList(context.Background(), m.ours.list, m.rt(id, m.pods[id], "eth0"))
		})
	}
	if m.bridge == "" {
		// The reference ptp's host routes to the pod gone (the host end's
		// IPv6 gateway address went with the link down too): CHECK must
		// miss them.
		for _, a := range m.live[id] {
			_ = m.inHost(func() error { return exec.Command("ip", "route", "del", a, "dev", name).Run() })
		}
		if err := check(); err == nil || !strings.Contains(err.Error(), "host: no route to") && !strings.Contains(err.Error(), "lacks address") {
			m.t.Fatalf("CHECK of %s without the reference's host route: %v, want an error naming it", id, err)
		}
		return
	}
	if err := check(); err != nil {
		m.t.Fatalf("CHECK of %s with its host end up again: %v", id, err)
	}
	// Off the bridge: CHECK must say so.
	set := func(args ...string) {
		if err := m.inHost(func() error { return exec.Command("ip", append([]string{"link", "set", name}, args...)...).Run() }); err != nil {
			m.t.Fatal(err)
		}
	}
	set("nomaster")
	if err := check(); err == nil || !strings.Contains(err.Error(), "is not a port of "+m.bridge) {
		m.t.Fatalf("CHECK of %s with its host end off the bridge: %v, want an error saying so", id, err)
	}
	set("master", m.bridge)
}

// dropReferenceHostLink deletes the host end of the reference's pod id
// (and with it the pod's eth0): CHECK must name the link prevResult
// names, not a netns-cni one that never was.
func (m *migration) dropReferenceHostLink(id string) {
	m.t.Helper()
	name := m.hostEnd(id)
	if err := m.inHost(func() error { return exec.Command("ip", "link", "del", name).Run() }); err != nil {
		m.t.Fatal(err)
	}
	err := m.inHost(func() error {
		return m.ours.cni.CheckNetworkList(context.Background(), m.ours.list, m.rt(id, m.pods[id], "eth0"))
	})
	if err == nil || !strings.Contains(err.Error(), name+", the host end prevResult names") {
		m.t.Fatalf("CHECK of %s with its host end %s gone: %v, want an error naming it", id, name, err)
	}
}

// hostEnd is the host link that is the peer of pod id's eth0.
func (m *migration) hostEnd(id string) string {
	m.t.Helper()
	var peer int
	if err := m.pods[id].Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err == nil {
			peer = l.Attrs().ParentIndex
		}
		return err
	}); err != nil {
		m.t.Fatal(err)
	}
	var name string
	if err := m.inHost(func() error {
		l, err := netlink.LinkByIndex(peer)
		if err == nil {
			name = l.Attrs().Name
		}
		return err
	}); err != nil {
		m.t.Fatalf("the host end of %s: %v", id, err)
	}
	return name
}

// finish checks that nothing is left: the host as it was, and no libcni
// cache entry. Two things the reference makes once for every network are
// set aside, as the reference leaves them after its own last pod: the
// bridge (neither plugin removes one by default) and upstream's nftables
// table inet cni_plugins_masquerade, shared by the reference's networks —
// once its chain masq_checks holds no rule.
func (m *migration) finish() {
	m.t.Helper()
	if m.bridge != "" {
		_ = m.inHost(func() error { return exec.Command("ip", "link", "del", m.bridge).Run() })
	}
	_ = m.inHost(func() error {
		out, err := exec.Command("nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks").CombinedOutput()
		if err != nil { // no such table
			if m.nftRef {
				m.t.Fatalf("the reference made no nftables masquerade state: %s", out)
			}
			return nil
		}
		if strings.Contains(string(out), "id: ") { // each rule's comment names its container
			m.t.Fatalf("reference masquerade rules left:\n%s", out)
		}
		return exec.Command("nft", "delete", "table", "inet", "cni_plugins_masquerade").Run()
	})
	if after := m.settled(m.t, m.before); after != m.before {
		m.t.Fatalf("after the migration:\n%s", stateDiff(m.before, after))
	}
	if left, _ := filepath.Glob(filepath.Join(m.cacheDir, "results", "*")); len(left) > 0 {
		m.t.Fatalf("libcni cache entries left: %v", left)
	}
}

// TestGCOfReferenceAttachments: after a reboot or a runtime that lost its
// pods, GC through a netns-cni config removes what the reference plugins
// made for attachments not listed: their reservations and their
// per-attachment masquerade state, iptables (Debian's 1.1.1) or nftables
// (upstream v1.10.0 with ipMasqBackend "nftables"). A listed attachment
// keeps everything.
func TestGCOfReferenceAttachments(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	// ours is today's config: ipMasq kept, or turned off since the
	// reference made the pods (its masquerade state must go all the same).
	for _, tc := range []struct{ name, dir, backend, ours string }{
		{"debian-1.1.1/iptables", refDir, "", `"ipMasq":true`},
		{"upstream-v1.10.0/nftables", upstreamDir, `,"ipMasqBackend":"nftables"`, `"ipMasq":true`},
		{"debian-1.1.1/iptables/ipMasq-turned-off", refDir, "", `"ipMasq":false`},
		{"upstream-v1.10.0/nftables/ipMasq-turned-off", upstreamDir, `,"ipMasqBackend":"nftables"`, `"ipMasq":false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMigration(t, tc.dir, "ptp", "veth-ptp", "", families[2])
			m.ref.list = m.confWith("ptp", `"ipMasq":true`+tc.backend)
			m.ours.list = m.confWith("veth-ptp", tc.ours+tc.backend)
			for _, id := range []string{"gone1", "gone2", "kept"} {
				m.add(m.ref, id)
			}
			for _, id := range []string{"gone1", "gone2"} {
				if err := m.sb.RemovePod(m.pods[id]); err != nil {
					t.Fatal(err)
				}
			}
			stdin := string(m.ours.list.Plugins[0].Bytes)
			stdin = strings.TrimSuffix(strings.TrimSpace(stdin), "}") + `,"cniVersion":"1.1.0","name":"` + m.ours.list.Name +
				`","cni.dev/valid-attachments":[{"containerID":"kept","ifname":"eth0"}]}`
			if r := m.exec("veth-ptp", m.pluginEnv("GC", "", "", ""), stdin); r.exit != 0 {
				t.Fatalf("GC: %s %s", r.stdout, r.stderr)
			}
			state := m.masqState(t)
			// The reference's comments: `id: \"c1\"` (iptables -S), `id: c1"` (nftables).
			has := func(id string) bool {
				return strings.Contains(state, `id: \"`+id+`\"`) || strings.Contains(state, `id: `+id+`"`)
			}
			for _, id := range []string{"gone1", "gone2"} {
				if has(id) {
					t.Fatalf("GC left %s's masquerade state:\n%s", id, state)
				}
			}
			if !has("kept") {
				t.Fatalf("GC removed the listed attachment's masquerade state:\n%s", state)
			}
			if got := m.reservations(t); len(got) != 2 {
				t.Fatalf("reservations after GC %v, want the kept pod's two", got)
			}
			m.del(m.ours, "kept")
			for _, id := range []string{"gone1", "gone2"} { // the runtime's cache entries
				_ = m.inHost(func() error { return m.ref.cni.DelNetworkList(context.Background(), m.ref.list, m.rt(id, nil, "eth0")) })
			}
			if state := m.masqState(t); strings.Contains(state, "id: ") || strings.Contains(state, ", id") {
				t.Fatalf("reference masquerade state left:\n%s", state)
			}
			if got := m.reservations(t); len(got) != 0 {
				t.Fatalf("reservations left: %v", got)
			}
		})
	}
}

// confWith is the migration network's config for plugin type typ with
// the given keys.
func (m *migration) confWith(typ, keys string) *libcni.NetworkConfigList {
	text := fmt.Sprintf(`{"cniVersion":"1.0.0","name":%q,"plugins":[%s]}`, m.netName("mig"), m.ptpConf(typ, families[2], keys))
	list, err := libcni.ConfListFromBytes([]byte(text))
	if err != nil {
		m.t.Fatal(err)
	}
	return list
}

// masqState is the reference's masquerade state in the fake host: the
// nat tables of both families and its nftables chain.
func (m *world) masqState(t *testing.T) string {
	var b strings.Builder
	_ = m.inHost(func() error {
		for _, c := range [][]string{{"iptables", "-t", "nat", "-S"}, {"ip6tables", "-t", "nat", "-S"}, {"nft", "list", "chain", "inet", "cni_plugins_masquerade", "masq_checks"}} {
			out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
			b.Write(out)
		}
		return nil
	})
	return b.String()
}

// reservations lists the reserved addresses in the sandbox's stores.
func (w *world) reservations(t *testing.T) []string {
	var out []string
	matches, _ := filepath.Glob(filepath.Join(w.sb.Dir, "ipam", "*", "*"))
	for _, p := range matches {
		if base := filepath.Base(p); strings.ContainsAny(base, ".:") && !strings.HasPrefix(base, "last_reserved_ip") && base != ".netns-cni" {
			out = append(out, base)
		}
	}
	return out
}
