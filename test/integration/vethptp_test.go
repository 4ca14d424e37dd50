package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// family is an address plan for a test network.
type family struct {
	name   string
	ranges string // the ipam "ranges" value
	v4, v6 bool
}

var families = []family{
	{"v4", `[[{"subnet":"10.10.0.0/24"}]]`, true, false},
	{"v6", `[[{"subnet":"fd10::/64"}]]`, false, true},
	{"dual", `[[{"subnet":"10.10.0.0/24"}],[{"subnet":"fd10::/64"}]]`, true, true},
}

// pluginConf is one plugin's config object for a conflist.
// Its IPAM has a default route per family, as a network that reaches
// beyond its node needs.
func (w *world) ptpConf(plugin string, fam family, extra string) string {
	if extra != "" {
		extra = "," + extra
	}
	var routes []string
	if fam.v4 {
		routes = append(routes, `{"dst":"0.0.0.0/0"}`)
	}
	if fam.v6 {
		routes = append(routes, `{"dst":"::/0"}`)
	}
	return fmt.Sprintf(`{"type":%q,"ipam":{"type":"host-local","dataDir":%q,"ranges":%s,"routes":[%s]}%s}`,
		plugin, filepath.Join(w.sb.Dir, "ipam"), fam.ranges, strings.Join(routes, ","), extra)
}

// parsed is the conflist of network netName(name) at version with
// plugins, parsed only: a config a runtime holds without a file.
func (w *world) parsed(version, name string, plugins ...string) *libcni.NetworkConfigList {
	w.t.Helper()
	text := fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, version, w.netName(name), strings.Join(plugins, ","))
	list, err := libcni.ConfListFromBytes([]byte(text))
	if err != nil {
		w.t.Fatalf("conflist: %v\n%s", err, text)
	}
	return list
}

func (w *world) list(version, name string, plugins ...string) *libcni.NetworkConfigList {
	return w.confList(fmt.Sprintf(`{"cniVersion":%q,"name":%q,"plugins":[%s]}`, version, w.netName(name), strings.Join(plugins, ",")))
}

// ping sends one echo request from inside ns to addr and reports success.
func ping(_ *testing.T, ns *nsutil.NS, addr string) error {
	_, err := nstest.Ping(ns, addr)
	return err
}

// hostState describes everything a plugin may change in the fake host:
// links, addresses, routes, NAT rules of both backends and the IPAM store.
func (w *world) hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	h, err := w.sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		fmt.Fprintf(&b, "link %s alias=%q\n", l.Attrs().Name, l.Attrs().Alias)
		_ = w.inHost(func() error {
			v, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + l.Attrs().Name + "/route_localnet")
			if strings.TrimSpace(string(v)) == "1" {
				b.WriteString("  route_localnet\n") // port mappings turned it on
			}
			return nil
		})
		as, _ := h.AddrList(l, netlink.FAMILY_ALL)
		var lines []string
		for _, a := range as {
			if a.IP.IsLinkLocalUnicast() {
				continue // made by the kernel, some time after a link comes up
			}
			lines = append(lines, fmt.Sprintf("  addr %s\n", a.IPNet))
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, ""))
	}
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix_RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var rs []string
	for _, r := range routes {
		if r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast() || r.Dst != nil && r.Dst.IP.IsMulticast() || r.Type == unix.RTN_ANYCAST {
			// The kernel's own per-link routes, and the subnet-router anycast
			// routes it adds on every IPv6 link once forwarding is on (the
			// plugin turns forwarding on and leaves it, as the reference does).
			continue
		}
		rs = append(rs, fmt.Sprintf("route table=%d dst=%v gw=%v dev=%d", r.Table, r.Dst, r.Gw, r.LinkIndex))
	}
	sort.Strings(rs)
	b.WriteString(strings.Join(rs, "\n") + "\n")
	_ = w.inHost(func() error {
		for _, c := range [][]string{{"iptables", "-t", "nat", "-S"}, {"ip6tables", "-t", "nat", "-S"}, {"iptables", "-S"}, {"ip6tables", "-S"}} {
			out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
			if err != nil {
				t.Errorf("%v: %v %s", c, err, out)
			}
			b.Write(out)
		}
		// Every nftables table but iptables' own (listed above: an empty
		// built-in chain that iptables-nft leaves once used is iptables'
		// table, shared with kube-proxy and others, not ours to remove).
		out, err := exec.Command("nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Errorf("nft list tables: %v %s", err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 || (f[1] == "ip" || f[1] == "ip6") && slices.Contains([]string{"nat", "filter", "mangle", "raw", "security"}, f[2]) {
				continue
			}
			tb, _ := exec.Command("nft", "list", "table", f[1], f[2]).CombinedOutput()
			b.Write(tb)
		}
		return nil
	})
	matches, _ := filepath.Glob(filepath.Join(w.sb.Dir, "ipam", "*", "*"))
	for _, m := range matches {
		if base := filepath.Base(m); base != "lock" && !strings.HasPrefix(base, "last_reserved_ip") && base != ".netns-cni" {
			fmt.Fprintf(&b, "store %s\n", base)
		}
	}
	owners, _ := filepath.Glob(filepath.Join(w.sb.Dir, "ipam", "*", ".netns-cni", "owners", "*"))
	fmt.Fprintf(&b, "owner index entries %d\n", len(owners))
	return b.String()
}

const unix_RT_TABLE_UNSPEC = unix.RT_TABLE_UNSPEC

// settled waits until the host state equals want and returns the last
// state seen: a container end and its addresses can outlive the delete of
// its host end by a moment.
func (w *world) settled(t *testing.T, want string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := w.hostState(t)
		if got == want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stateDiff shows the lines that differ between two hostState outputs.
func stateDiff(before, after string) string {
	var b strings.Builder
	if before != after && len(before) == len(after) {
		b.WriteString("(same lines, another order)\n")
	}
	bl, al := strings.Split(before, "\n"), strings.Split(after, "\n")
	for _, l := range bl {
		if !slices.Contains(al, l) {
			b.WriteString("- " + l + "\n")
		}
	}
	for _, l := range al {
		if !slices.Contains(bl, l) {
			b.WriteString("+ " + l + "\n")
		}
	}
	return b.String()
}

func containerIPs(res *current.Result) []string {
	var out []string
	for _, ip := range res.IPs {
		out = append(out, ip.Address.IP.String())
	}
	return out
}

func TestVethPTPLifecycle(t *testing.T) {
	for _, v := range []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		for _, fam := range families {
			t.Run(v+"/"+fam.name, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				list := w.list(v, "ptp", w.ptpConf("veth-ptp", fam, ""))
				before := w.hostState(t)
				podA, podB := w.sb.PodT(t, "a"), w.sb.PodT(t, "b")
				rtA, rtB := w.rt("ctr-a", podA, "eth0"), w.rt("ctr-b", podB, "eth0")
				resA, err := w.add(list, rtA)
				if err != nil {
					t.Fatalf("ADD a: %v", err)
				}
				resB, err := w.add(list, rtB)
				if err != nil {
					t.Fatalf("ADD b: %v", err)
				}
				// The result: host veth, container interface with its sandbox,
				// every address indexed to the container interface.
				if len(resA.Interfaces) != 2 || resA.Interfaces[1].Name != "eth0" || resA.Interfaces[1].Sandbox != podA.Path() ||
					resA.Interfaces[0].Sandbox != "" || len(resA.Interfaces[0].Name) > 15 {
					t.Fatalf("interfaces %+v", resA.Interfaces)
				}
				wantIPs := map[bool]int{true: 2, false: 1}[fam.v4 && fam.v6]
				if len(resA.IPs) != wantIPs {
					t.Fatalf("ips %v", resA.IPs)
				}
				for _, ip := range resA.IPs {
					if ip.Interface == nil || *ip.Interface != 1 || ip.Gateway == nil {
						t.Fatalf("ip %+v not indexed to the container interface or without gateway", ip)
					}
					// Kernel state, both sides.
					if got := addrs(t, podA, "eth0"); !slices.Contains(got, ip.Address.String()) {
						t.Fatalf("container eth0 addresses %v lack %s", got, ip.Address.String())
					}
					gwBits := 32
					if ip.Gateway.To4() == nil {
						gwBits = 128
					}
					if got := addrs(t, w.sb.Host, resA.Interfaces[0].Name); !slices.Contains(got, fmt.Sprintf("%s/%d", ip.Gateway, gwBits)) {
						t.Fatalf("host veth addresses %v lack the gateway %s", got, ip.Gateway)
					}
					// Reachable at once: no DAD wait on either side.
					if err := ping(t, podA, ip.Gateway.String()); err != nil {
						t.Fatal(err)
					}
				}
				if len(resA.Routes) == 0 {
					t.Fatal("no default route in the result")
				}
				for _, ip := range containerIPs(resB) {
					if err := ping(t, podA, ip); err != nil {
						t.Fatalf("pod a cannot reach pod b: %v", err)
					}
				}
				if atLeast(v, "0.4.0") {
					if err := w.check(list, rtA); err != nil {
						t.Fatalf("CHECK: %v", err)
					}
				}
				for _, rt := range []*libcni.RuntimeConf{rtA, rtB, rtA} {
					if err := w.del(list, rt); err != nil {
						t.Fatalf("DEL: %v", err)
					}
				}
				if after := w.settled(t, before); after != before {
					t.Fatalf("host state after DEL differs:\n%s", stateDiff(before, after))
				}
			})
		}
	}
}
