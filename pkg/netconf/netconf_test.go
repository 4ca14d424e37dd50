package netconf_test

import (
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func TestHostVethName(t *testing.T) {
	a := netconf.HostVethName("vp", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0")
	if len(a) != 15 || !strings.HasPrefix(a, "vp") {
		t.Fatalf("name %q: want 15 bytes starting with vp", a)
	}
	if netconf.HostVethName("vp", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "eth0") != a {
		t.Fatal("not stable")
	}
	if netconf.HostVethName("vp", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "net1") == a {
		t.Fatal("another ifname, same name")
	}
}

func TestAlias(t *testing.T) {
	al := netconf.Alias("veth-ptp", "net", "ctr-1", "eth0")
	got, ok := netconf.ParseAlias(al)
	if !ok || got != (netconf.Attachment{"veth-ptp", "net", "ctr-1", "eth0"}) {
		t.Fatalf("netconf.ParseAlias(%q) = %+v %v", al, got, ok)
	}
	for _, bad := range []string{"", netconf.RetiredAlias, netconf.BridgeAlias, "other:veth-ptp:net:c:eth0", "netns-cni:a:b:c"} {
		if _, ok := netconf.ParseAlias(bad); ok {
			t.Errorf("netconf.ParseAlias(%q) accepted", bad)
		}
	}
}

func TestKey(t *testing.T) {
	short := strings.Repeat("n", 64)
	if netconf.Key(short) != short {
		t.Fatal("a name of 64 bytes must stay as it is")
	}
	long := strings.Repeat("n", 255)
	k := netconf.Key(long)
	if len(k) > 64 || !strings.HasPrefix(k, strings.Repeat("n", 40)+"~") || netconf.Key(long) != k {
		t.Fatalf("Key(255 bytes) = %q: want at most 64 bytes, its prefix, stable", k)
	}
	if netconf.Key(long[:254]+"m") == k {
		t.Fatal("two long names, one key")
	}
	al := netconf.Alias("bridge-nat", long, strings.Repeat("c", 128), "eth0")
	if len(al) > 255 {
		t.Fatalf("alias of %d bytes passes the kernel's 255", len(al))
	}
	a, ok := netconf.ParseAlias(al)
	if !ok || !a.Is(strings.Repeat("c", 128), "eth0") || a.Is(strings.Repeat("c", 127), "eth0") || a.Network != k {
		t.Fatalf("ParseAlias(%q) = %+v", al, a)
	}
}

func TestVlanLinkName(t *testing.T) {
	for _, tc := range []struct {
		bridge string
		vid    int
		want   string
	}{{"cni0", 10, "cni0.10"}, {"a-long-bridge15", 4094, "a-long-bri.4094"}} {
		if got := netconf.VlanLinkName(tc.bridge, tc.vid); got != tc.want || len(got) > 15 {
			t.Errorf("netconf.VlanLinkName(%q, %d) = %q, want %q", tc.bridge, tc.vid, got, tc.want)
		}
	}
}

func TestGateway(t *testing.T) {
	_, n, _ := net.ParseCIDR("10.1.2.0/24")
	ip := &current.IPConfig{Address: net.IPNet{IP: net.ParseIP("10.1.2.7").To4(), Mask: n.Mask}}
	gw, err := netconf.Gateway(ip)
	if err != nil || gw.String() != "10.1.2.1" {
		t.Fatalf("derived gateway %v %v", gw, err)
	}
	ip.Gateway = net.ParseIP("10.1.2.254")
	if gw, _ := netconf.Gateway(ip); gw.String() != "10.1.2.254" {
		t.Fatalf("IPAM's gateway not kept: %v", gw)
	}
	own := &current.IPConfig{Address: net.IPNet{IP: net.ParseIP("10.1.2.1").To4(), Mask: n.Mask}}
	if _, err := netconf.Gateway(own); !errors.Is(err, netconf.ErrNoGateway) {
		t.Fatal("an address that is its own gateway accepted")
	}
}

func TestBridgeHelpers(t *testing.T) {
	sb := nstest.NewT(t)
	h, err := sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br, created, err := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: "br-t", MachineID: "0123456789abcdef0123456789abcdef"})
	if err != nil || !created || br.Alias != netconf.BridgeAlias {
		t.Fatalf("netconf.EnsureBridge: %v %v %v", br, created, err)
	}
	mac := br.HardwareAddr.String()
	if want := netconf.BridgeMAC("0123456789abcdef0123456789abcdef", "br-t").String(); mac != want {
		t.Fatalf("new bridge's MAC %s, want %s, from the machine ID and its name", mac, want)
	}
	if _, created, _ := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: "br-t"}); created {
		t.Fatal("second netconf.EnsureBridge created again")
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "not-br"}, PeerName: "not-br-p"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: "not-br"}); !errors.Is(err, netconf.ErrNotBridge) || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("a veth taken for a bridge: %v", err)
	}
	// netconf.Gateway addresses: added once, a different one refused, then forced.
	gw := &net.IPNet{IP: net.ParseIP("10.9.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	if added, _, err := netconf.EnsureGatewayAddr(h, br, gw, false, true, `"bridge"`); err != nil || !added {
		t.Fatalf("first gateway: %v %v", added, err)
	}
	if added, _, err := netconf.EnsureGatewayAddr(h, br, gw, false, true, `"bridge"`); err != nil || added {
		t.Fatalf("same gateway again: %v %v", added, err)
	}
	other := &net.IPNet{IP: net.ParseIP("10.8.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	if _, _, err := netconf.EnsureGatewayAddr(h, br, other, false, true, `"bridge"`); !errors.Is(err, netconf.ErrAddrConflict) || !strings.Contains(err.Error(), `"forceAddress": true`) {
		t.Fatalf("different gateway without force: %v", err)
	}
	if _, removed, err := netconf.EnsureGatewayAddr(h, br, other, true, true, `"bridge"`); err != nil || len(removed) != 1 || removed[0].IPNet.String() != "10.9.0.1/24" {
		t.Fatalf("forced: %v, removed %v", err, removed)
	}
	as, _ := h.AddrList(br, netlink.FAMILY_V4)
	if len(as) != 1 || as[0].IPNet.String() != "10.8.0.1/24" {
		t.Fatalf("addresses after force: %v", as)
	}
	// The bridge's MAC stays put when ports come and go.
	p, err := sb.NewPod("p")
	if err != nil {
		t.Fatal(err)
	}
	ph, _ := p.Handle()
	defer ph.Close()
	if _, _, err := netconf.CreateVeth(h, ph, p, netconf.VethSpec{HostName: "port0", ContName: "eth0", MasterIndex: br.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName("br-t")
	if l.Attrs().HardwareAddr.String() != mac {
		t.Fatalf("bridge MAC changed from %s to %s when a port joined", mac, l.Attrs().HardwareAddr)
	}
	ports, err := netconf.Ports(h, l)
	if err != nil || len(ports) != 1 {
		t.Fatalf("ports %v %v", ports, err)
	}
}

// sandboxBridge makes a bridge netns-cni's way in a test sandbox's host
// and returns a handle there (closed with the test) and the bridge.
func sandboxBridge(t *testing.T, name string) (nsutil.Handle, netlink.Link) {
	t.Helper()
	sb := nstest.NewT(t)
	h, err := sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	br, _, err := netconf.EnsureBridge(h, netconf.BridgeSpec{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return h, br
}

// TestRevertGateways: the address forceAddress replaced comes back though
// another network's container is on the bridge (it used to stay away, and
// that container kept no gateway); the failed ADD's own gateway goes only
// from a bridge no container is on (another may use the same address).
func TestRevertGateways(t *testing.T) {
	h, br := sandboxBridge(t, "br-g")
	old := &net.IPNet{IP: net.ParseIP("10.8.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	gw := &net.IPNet{IP: net.ParseIP("10.9.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	if _, _, err := netconf.EnsureGatewayAddr(h, br, old, false, true, `"bridge"`); err != nil {
		t.Fatal(err)
	}
	v4 := func() []string {
		as, _ := h.AddrList(br, netlink.FAMILY_V4)
		var out []string
		for _, a := range as {
			out = append(out, a.IPNet.String())
		}
		slices.Sort(out)
		return out
	}
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port-a", MasterIndex: br.Attrs().Index}, PeerName: "port-ap"}); err != nil {
		t.Fatal(err)
	}
	added, removed, err := netconf.EnsureGatewayAddr(h, br, gw, true, true, `"bridge"`)
	if err != nil || !added || len(removed) != 1 {
		t.Fatalf("forceAddress: added %v removed %v: %v", added, removed, err)
	}
	ch := netconf.GatewayChange{Added: []*net.IPNet{gw}, Removed: removed}
	if err := netconf.RevertGateways(h, "br-g", br, ch); err != nil {
		t.Fatal(err)
	}
	if got := v4(); !slices.Equal(got, []string{"10.8.0.1/24", "10.9.0.1/24"}) {
		t.Fatalf("after the revert beside a container: %v, want the replaced address back and the new one kept", got)
	}
	if err := netconf.DelLink(h, "port-a"); err != nil {
		t.Fatal(err)
	}
	if err := netconf.RevertGateways(h, "br-g", br, ch); err != nil {
		t.Fatal(err)
	}
	if got := v4(); !slices.Equal(got, []string{"10.8.0.1/24"}) {
		t.Fatalf("after the revert on an empty bridge: %v, want the replaced address alone", got)
	}
}

// TestBridgeRemovalHelpers: an empty bridge netns-cni made goes down and
// is removed; one with a port, or one someone else made, stays.
func TestBridgeRemovalHelpers(t *testing.T) {
	h, br := sandboxBridge(t, "br-r")
	gw := &net.IPNet{IP: net.ParseIP("10.9.0.1").To4(), Mask: net.CIDRMask(24, 32)}
	if _, _, err := netconf.EnsureGatewayAddr(h, br, gw, false, true, `"bridge"`); err != nil {
		t.Fatal(err)
	}
	if err := netconf.SetUp(h, br); err != nil {
		t.Fatal(err)
	}
	// In use: a port keeps everything in place.
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "port-r", MasterIndex: br.Attrs().Index}, PeerName: "port-rp"}); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{netconf.SetDownIfUnused(h, "br-r"), netconf.RemoveBridgeIfEmpty(h, "br-r")} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if l, err := h.LinkByName("br-r"); err != nil || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("bridge with a port taken down or removed: %v", err)
	}
	// Empty: down, gone.
	if err := netconf.DelLink(h, "port-r"); err != nil {
		t.Fatal(err)
	}
	if err := netconf.SetDownIfUnused(h, "br-r"); err != nil {
		t.Fatal(err)
	}
	if l, _ := h.LinkByName("br-r"); l.Attrs().Flags&net.FlagUp != 0 {
		t.Fatal("empty bridge still up")
	}
	if err := netconf.RemoveBridgeIfEmpty(h, "br-r"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("br-r"); err == nil {
		t.Fatal("empty bridge of ours not removed")
	}
	if err := netconf.RemoveBridgeIfEmpty(h, "br-r"); err != nil {
		t.Fatalf("removing a bridge that is gone: %v", err)
	}
	// Someone else's bridge is never removed.
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br-x"}}); err != nil {
		t.Fatal(err)
	}
	if err := netconf.RemoveBridgeIfEmpty(h, "br-x"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("br-x"); err != nil {
		t.Fatal("a bridge netns-cni did not make was removed")
	}
}

// TestCheckMessages: what CHECK reports names routes without Go zero
// values ("via <nil>").
func TestCheckMessages(t *testing.T) {
	sb := nstest.NewT(t)
	h, err := sb.Host.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	_, dst, _ := net.ParseCIDR("10.77.0.0/16")
	for _, tc := range []struct {
		dst  *net.IPNet
		gw   net.IP
		want string
	}{
		{dst, nil, "container: no route to 10.77.0.0/16 on lo"},
		{dst, net.ParseIP("10.0.0.1"), "container: no route to 10.77.0.0/16 via 10.0.0.1 on lo"},
		{nil, net.ParseIP("fd00::1"), "container: no route to default via fd00::1 on lo"},
	} {
		err := netconf.CheckRoute(h, lo, tc.dst, tc.gw, "container")
		if err == nil || err.Error() != tc.want || strings.Contains(err.Error(), "<nil>") {
			t.Errorf("CheckRoute(%v, %v) = %v, want %q", tc.dst, tc.gw, err, tc.want)
		}
	}
}

// TestMachineID: this node's machine ID is 32 hex digits, or none.
func TestMachineID(t *testing.T) {
	if id := netconf.MachineID(); id != "" && len(id) != 32 {
		t.Fatalf("MachineID() = %q", id)
	}
}

// TestBridgeMAC: a bridge's MAC is locally administered and unicast, the
// same for a name on one node, and differs between nodes and names.
func TestBridgeMAC(t *testing.T) {
	a, again := netconf.BridgeMAC("0f3d...node-a", "cni0"), netconf.BridgeMAC("0f3d...node-a", "cni0")
	other, name := netconf.BridgeMAC("77aa...node-b", "cni0"), netconf.BridgeMAC("0f3d...node-a", "cni1")
	if a.String() != again.String() {
		t.Fatalf("%s then %s for the same node and name", a, again)
	}
	if a.String() == other.String() || a.String() == name.String() {
		t.Fatalf("same MAC %s across nodes (%s) or names (%s)", a, other, name)
	}
	if a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Fatalf("%s is not a locally administered unicast address", a)
	}
}
