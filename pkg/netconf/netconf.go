// Package netconf does the link, address and route work the plugins share:
// a veth pair whose container end is born inside the container's
// namespace, addresses that are usable at once (no IPv6 duplicate address
// detection, no prefix route unless asked), the point-to-point routes,
// forwarding sysctls and the checks CHECK runs. Every function takes an
// explicit netlink handle for the namespace it acts on; none relies on the
// calling thread's namespace.
package netconf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Handle is a netlink handle bound to one namespace.
type Handle = nsutil.Handle

// HostVethName derives the host end's name from the attachment, so that
// DEL and GC find it without the container's namespace: prefix plus a hash,
// 15 bytes, valid and stable.
func HostVethName(prefix, containerID, ifname string) string {
	sum := sha256.Sum256([]byte(containerID + "\x00" + ifname))
	return prefix + hex.EncodeToString(sum[:])[:15-len(prefix)]
}

// Key is s (a network name or a container ID) as it goes into the names
// and labels of kernel objects, each of which has a length limit (an
// ifalias 255 bytes, an nftables table name or comment 255) while the spec
// sets none: s itself up to 64 bytes, else its first 40 bytes, "~" and 16
// hex digits of its SHA-256. "~" is in no valid network name or container
// ID, so a key made this way never equals a name kept whole.
func Key(s string) string {
	if len(s) <= 64 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:40] + "~" + hex.EncodeToString(sum[:8])
}

// Alias is the ifalias written on a host veth: it names the plugin, the
// network and the attachment (network and container ID as Key), so GC can
// list a network's veths and DEL can tell whether a network still has
// containers, with no state on disk. It fits the kernel's 255 bytes
// whatever the lengths of the names.
func Alias(plugin, network, containerID, ifname string) string {
	return strings.Join([]string{"netns-cni", plugin, Key(network), Key(containerID), ifname}, ":")
}

// Attachment is what an alias says. Network and ContainerID are Keys.
type Attachment struct {
	Plugin, Network, ContainerID, IfName string
}

// Is reports whether the alias names the attachment (containerID, ifname).
func (a Attachment) Is(containerID, ifname string) bool {
	return a.ContainerID == Key(containerID) && a.IfName == ifname
}

// ParseAlias reads an alias written by Alias.
func ParseAlias(alias string) (Attachment, bool) {
	f := strings.Split(alias, ":")
	if len(f) != 5 || f[0] != "netns-cni" {
		return Attachment{}, false
	}
	return Attachment{f[1], f[2], f[3], f[4]}, true
}

// Attachments lists the host links of a network's attachments, whichever
// netns-cni plugin made them: a network's host-wide state (its masquerade
// rules) is the network's, not one plugin's.
func Attachments(h Handle, network string) (map[Attachment]netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[Attachment]netlink.Link{}
	for _, l := range links {
		if a, ok := ParseAlias(l.Attrs().Alias); ok && a.Network == Key(network) {
			out[a] = l
		}
	}
	return out, nil
}

// VethSpec says how to make a veth pair.
type VethSpec struct {
	HostName string
	// ContName is the name of the end in the container (CNI_IFNAME).
	ContName string
	MTU      int
	// ContMAC, when set, is the container end's MAC address.
	ContMAC net.HardwareAddr
	// Alias is written on the host end.
	Alias string
	// MasterIndex, when set, makes the host end a port of that bridge.
	MasterIndex int
}

// Sentinel errors, for errors.Is: pkg/plugin gives each its CNI code.
var (
	// ErrExists: a link of that name already exists (in the host).
	ErrExists = errors.New("link already exists")
	// ErrIfnameExists: CNI_IFNAME is taken in the container's namespace.
	ErrIfnameExists = errors.New("already exists")
	// ErrNoGateway: an address has no gateway to route through.
	ErrNoGateway = errors.New("no gateway")
	// ErrAttached: the host end's name is another attachment's.
	ErrAttached = errors.New("exists already")
	// ErrAddrRouted: the host routes a container address to another
	// attachment already.
	ErrAddrRouted = errors.New("is routed already to")
)

// CreateVeth makes the pair with its container end created directly in
// cont (no rename, no move: nothing half-made is ever visible), both ends
// with the MTU, and returns both links. host is a handle in the host
// namespace, contH one in the container's.
func CreateVeth(host Handle, contH Handle, cont *nsutil.NS, spec VethSpec) (hostLink, contLink netlink.Link, err error) {
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: spec.HostName, MTU: spec.MTU, Alias: spec.Alias, TxQLen: -1, MasterIndex: spec.MasterIndex},
		PeerName:         spec.ContName,
		PeerHardwareAddr: spec.ContMAC,
		PeerNamespace:    netlink.NsFd(cont.Fd()),
		PeerTxQLen:       -1,
	}
	if err := host.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, nil, fmt.Errorf("create veth %s: %w", spec.HostName, ErrExists)
		}
		return nil, nil, fmt.Errorf("create veth %s/%s: %w", spec.HostName, spec.ContName, err)
	}
	hostLink, err = host.LinkByName(spec.HostName)
	if err == nil && spec.Alias != "" && hostLink.Attrs().Alias != spec.Alias {
		err = host.LinkSetAlias(hostLink, spec.Alias)
	}
	if err == nil {
		contLink, err = contH.LinkByName(spec.ContName)
	}
	if err != nil {
		_ = host.LinkDel(veth)
		return nil, nil, fmt.Errorf("veth %s created but unusable: %w", spec.HostName, err)
	}
	return hostLink, contLink, nil
}

// DelLink removes a link by name; one that is gone is fine.
func DelLink(h Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		if nsutil.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkDel(l); err != nil && !nsutil.IsNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// AddAddr puts ip on link, usable at once: IPv6 skips duplicate address
// detection (the reference waits for it, seconds per ADD), and no prefix
// route is made unless prefixRoute (the point-to-point setup routes by
// hand).
func AddAddr(h Handle, link netlink.Link, ip *net.IPNet, prefixRoute bool) error {
	return AddAddrDAD(h, link, ip, prefixRoute, false)
}

// AddAddrDAD is AddAddr that runs IPv6 duplicate address detection when
// dad is set (the bridge's "enabledad").
func AddAddrDAD(h Handle, link netlink.Link, ip *net.IPNet, prefixRoute, dad bool) error {
	a := &netlink.Addr{IPNet: ip}
	if ip.IP.To4() == nil && !dad {
		a.Flags |= unix.IFA_F_NODAD
	}
	if !prefixRoute {
		a.Flags |= unix.IFA_F_NOPREFIXROUTE
	}
	if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add address %s to %s: %w", ip, link.Attrs().Name, err)
	}
	return nil
}

// SetUp sets a link up.
func SetUp(h Handle, link netlink.Link) error {
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return nil
}

// HostRoute is a /32 (/128) route.
func HostRoute(ip net.IP) *net.IPNet {
	if ip4 := ip.To4(); ip4 != nil {
		return &net.IPNet{IP: ip4, Mask: net.CIDRMask(32, 32)}
	}
	return &net.IPNet{IP: ip, Mask: net.CIDRMask(128, 128)}
}

// DefaultDst is the default route's destination of ip's family:
// 0.0.0.0/0 or ::/0.
func DefaultDst(ip net.IP) net.IPNet {
	if ip.To4() != nil {
		return net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

// AddHostRoute routes a container address ip (a /32 or /128) to link,
// on-link: the host's one way to it. A route to ip through another link
// is never replaced — it is another attachment's, of a network that hands
// out the same addresses, and replacing it cut that live pod off (the
// reference ptp keeps it and leaves the new pod unreachable instead): an
// ErrAddrRouted error naming the link and its network.
func AddHostRoute(h Handle, link netlink.Link, ip net.IP) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: HostRoute(ip), Scope: netlink.SCOPE_LINK}
	err := h.RouteAdd(r)
	if err == nil || !errors.Is(err, unix.EEXIST) {
		return wrapRouteErr(r, err)
	}
	routes, lerr := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Dst: r.Dst, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if lerr != nil {
		return wrapRouteErr(r, err)
	}
	for _, old := range routes {
		if old.LinkIndex == r.LinkIndex {
			return nil // this very route
		}
	}
	other := "another link"
	if len(routes) > 0 {
		if l, err := h.LinkByIndex(routes[0].LinkIndex); err == nil {
			other = l.Attrs().Name
			if at, ok := ParseAlias(l.Attrs().Alias); ok {
				other += fmt.Sprintf(" (network %q, container %s)", at.Network, at.ContainerID)
			}
		}
	}
	return fmt.Errorf("host: %s: %w %s: two networks hand out the same addresses; give each its own subnet",
		ip, ErrAddrRouted, other)
}

// RouteBeside adds r beside any route the namespace has to the same
// destination, never in its place (netlink's create without exclusive or
// replace): IPv4 takes the newer first, IPv6 keeps both. Two attachments
// of one container with the same gateway (a network attached twice, two
// networks with one subnet) each keep their routes, and the DEL of either
// leaves the other's. EEXIST is this very route, given twice.
func RouteBeside(h Handle, r *netlink.Route) error {
	if err := h.RouteAddEcmp(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return wrapRouteErr(r, err)
	}
	return nil
}

func wrapRouteErr(r *netlink.Route, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("add route %s: %w", describeRoute(r.Dst, r.Gw), err)
}

// describeRoute says "10.1.0.0/16 via 10.1.0.1", "default via fd00::1" or
// "10.1.0.1/32 on-link": never a Go zero value.
func describeRoute(dst *net.IPNet, gw net.IP) string {
	d := "default"
	if dst != nil {
		if ones, _ := dst.Mask.Size(); ones > 0 {
			d = dst.String()
		}
	}
	if gw == nil {
		return d + " on-link"
	}
	return d + " via " + gw.String()
}

// AddRoutes installs routes on link, each via its gateway or, when it has
// none, via gws' gateway of its family (the reference plugins' rule); with
// none of its family either, on-link when onLink (a bridge: one L2
// segment), else ErrNoGateway (a point-to-point link). A route's priority
// (metric), table, scope, mtu and advmss (spec 1.1.0, section 5: routes)
// go into the kernel's route as given; the reference's ConfigureIface
// sets the first three. It returns the routes as installed, gateways
// filled in, for the result.
//
// A route is added beside any the container already has to the same
// destination, never in place of it, as the reference's ipam.ConfigureIface
// does (netlink's create without replace): a container on two networks
// that both give a default route keeps both — IPv4 uses the newer one
// first, IPv6 spreads over both (one multipath route) — and the DEL of
// either network leaves the other's in place.
func AddRoutes(h Handle, link netlink.Link, routes []*types.Route, gws []net.IP, onLink bool) ([]*types.Route, error) {
	var out []*types.Route
	for _, r := range routes {
		gw := r.GW
		if gw == nil {
			gw = FamilyGateway(gws, r.Dst.IP.To4() != nil)
		}
		if gw == nil && !onLink {
			return nil, fmt.Errorf(`"ipam.routes": %s: %w of its family`, r.Dst.String(), ErrNoGateway)
		}
		kr := KernelRoute(link, r)
		kr.Gw = gw
		err := h.RouteAddEcmp(kr)
		if err != nil && !errors.Is(err, unix.EEXIST) { // EEXIST: this very route, given twice
			return nil, fmt.Errorf("add route %s: %w", describeRoute(kr.Dst, gw), err)
		}
		installed := *r
		installed.GW = gw
		out = append(out, &installed)
	}
	return out, nil
}

// KernelRoute is r as a kernel route on link: its destination, gateway,
// priority, table (0: main), scope (nil: universe, as netlink sends it),
// mtu and advmss.
func KernelRoute(link netlink.Link, r *types.Route) *netlink.Route {
	dst := r.Dst
	kr := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: r.GW, Priority: r.Priority, MTU: r.MTU, AdvMSS: r.AdvMSS}
	if r.Table != nil {
		kr.Table = *r.Table
	}
	if r.Scope != nil {
		kr.Scope = netlink.Scope(*r.Scope)
	}
	return kr
}

// FamilyGateway is the first of gws of the family (IPv4 when v4), or nil.
func FamilyGateway(gws []net.IP, v4 bool) net.IP {
	for _, g := range gws {
		if g != nil && (g.To4() != nil) == v4 {
			return g
		}
	}
	return nil
}

// PointToPoint routes a container's subnet through its gateway over link:
// the gateway itself on-link (a /32 or /128: the host end answers for it),
// the rest of the subnet via the gateway. Written once for every
// point-to-point setup, with the address added without a prefix route.
func PointToPoint(h Handle, link netlink.Link, ip *current.IPConfig, gw net.IP) error {
	if err := RouteBeside(h, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: HostRoute(gw), Scope: netlink.SCOPE_LINK}); err != nil {
		return err
	}
	subnet := &net.IPNet{IP: ip.Address.IP.Mask(ip.Address.Mask), Mask: ip.Address.Mask}
	if ones, bits := subnet.Mask.Size(); ones < bits {
		return RouteBeside(h, &netlink.Route{LinkIndex: link.Attrs().Index, Dst: subnet, Gw: gw})
	}
	return nil
}

// PointToPointHost is the host end of a point-to-point link: each gateway
// on it as a /32 (/128), usable at once, and a route to each container
// address through it; then it is set up.
func PointToPointHost(h Handle, link netlink.Link, ips []*current.IPConfig, gws []net.IP) error {
	if err := SetUp(h, link); err != nil {
		return err
	}
	for i, gw := range gws {
		if slices.ContainsFunc(gws[:i], gw.Equal) {
			continue
		}
		if err := AddAddr(h, link, HostRoute(gw), false); err != nil {
			return err
		}
	}
	for _, ip := range ips {
		if err := AddHostRoute(h, link, ip.Address.IP); err != nil {
			return err
		}
	}
	return nil
}

// AddrOptions say how container addresses are added.
type AddrOptions struct {
	// PrefixRoute keeps the kernel's route to the address's subnet.
	PrefixRoute bool
	// DAD runs IPv6 duplicate address detection (ADD then waits seconds).
	DAD bool
}

// SetupLink sets link, in the namespace ns (h is a handle in it), up and
// gives it the addresses of ips. Where IPv6 is off in that namespace (as
// some hosts set, and new namespaces inherit) an IPv6 address is refused;
// then IPv6 is turned on for link alone and the address added again, as
// the reference plugins do for the interface they configure.
func SetupLink(ns *nsutil.NS, h Handle, link netlink.Link, ips []*current.IPConfig, opts AddrOptions) error {
	if err := SetUp(h, link); err != nil {
		return err
	}
	for _, ip := range ips {
		err := AddAddrDAD(h, link, &ip.Address, opts.PrefixRoute, opts.DAD)
		if err != nil && ip.Address.IP.To4() == nil && errors.Is(err, unix.EACCES) {
			if err = EnableIPv6(ns, link.Attrs().Name); err == nil {
				err = AddAddrDAD(h, link, &ip.Address, opts.PrefixRoute, opts.DAD)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// EnableIPv6 turns IPv6 on for one link of the namespace ns.
func EnableIPv6(ns *nsutil.NS, ifname string) error {
	return ns.Do(func() error { return setSysctl("/proc/sys/net/ipv6/conf/"+ifname+"/disable_ipv6", "0") })
}

// LoopbackUp sets lo up in the namespace of h (a no-op when it is up, or
// missing).
func LoopbackUp(h Handle) error {
	lo, err := h.LinkByName("lo")
	if nsutil.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if lo.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	return SetUp(h, lo)
}

// EnableForwarding turns IP forwarding on for the families in use, in the
// namespace the calling process runs in (the host), writing only what is
// off.
func EnableForwarding(v4, v6 bool) error {
	var errs []error
	if v4 {
		errs = append(errs, setSysctl("/proc/sys/net/ipv4/ip_forward", "1"))
	}
	if v6 {
		errs = append(errs, setSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1"))
	}
	return errors.Join(errs...)
}

// ForwardingOn reports whether forwarding is on for a family.
func ForwardingOn(v6 bool) bool {
	p := "/proc/sys/net/ipv4/ip_forward"
	if v6 {
		p = "/proc/sys/net/ipv6/conf/all/forwarding"
	}
	b, err := os.ReadFile(p)
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// SetRouteLocalnet turns route_localnet on or off on a host link, in the
// calling process's namespace: on, the link may carry traffic from and to
// 127.0.0.0/8, which forwarding a host port to a container needs for
// connections from the host's loopback (pkg/hostport). A link that is gone
// is no error.
func SetRouteLocalnet(ifname string, on bool) error {
	p := "/proc/sys/net/ipv4/conf/" + ifname + "/route_localnet"
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	val := "0"
	if on {
		val = "1"
	}
	return setSysctl(p, val)
}

// RouteLocalnet reports whether route_localnet is on for ifname (false
// when the link is gone).
func RouteLocalnet(ifname string) (bool, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + ifname + "/route_localnet")
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return strings.TrimSpace(string(b)) == "1", err
}

func setSysctl(path, val string) error {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == val {
		return nil
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
	}
	return nil
}

// HostIPv6 sets the IPv6 sysctls of a host-side link netns-cni made (a
// host veth, a bridge, a bridge's VLAN link), in the calling process's
// namespace (the host), before it is set up:
//
//   - accept_ra 0: a container must not be able to configure the host's
//     addresses or routes with router advertisements (the reference sets
//     it on its bridge; here every host-side link gets it);
//   - accept_dad 0 unless dad: the link's link-local address is usable at
//     once. The kernel sends the neighbour solicitations for forwarded
//     traffic only from a non-tentative link-local address, so without
//     this a container cannot reach another for the ~2 s DAD takes.
//
// Nothing is written when IPv6 is off on the host.
func HostIPv6(ifname string, dad bool) error {
	dir := "/proc/sys/net/ipv6/conf/" + ifname + "/"
	if _, err := os.Stat(dir + "accept_ra"); errors.Is(err, os.ErrNotExist) {
		return nil // IPv6 is off on this host
	}
	err := setSysctl(dir+"accept_ra", "0")
	if err == nil && !dad {
		err = setSysctl(dir+"accept_dad", "0")
	}
	return err
}

// BridgePortIPv6Off turns IPv6 off on a host veth that is only a bridge
// port, in the calling process's namespace (the host), before it is set
// up. A port forwards frames and needs no address of its own; IPv6 frames
// still cross it (the bridge takes them before the port's own IPv6
// would). Without it the kernel keeps nothing IPv6 on the port — no
// link-local address, no duplicate address detection, no multicast
// groups, and, once forwarding is on (isGateway, ipMasq), no router
// groups and anycast addresses — so deleting the port is cheaper: DEL's
// link delete on a dual-stack bridge took 38–41 ms with it, 20 ms without
// (as on an IPv4 bridge). It also ignores router advertisements. The
// reference bridge leaves IPv6 on its ports.
//
// Nothing is written when IPv6 is off on the host.
func BridgePortIPv6Off(ifname string) error {
	p := "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6"
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil // IPv6 is off on this host
	}
	return setSysctl(p, "1")
}

// Gateway is the address a container routes through: IPAM's gateway, else
// the first address of the subnet.
func Gateway(ip *current.IPConfig) (net.IP, error) {
	if ip.Gateway != nil {
		return ip.Gateway, nil
	}
	p, ok := netip.AddrFromSlice(ip.Address.IP.Mask(ip.Address.Mask))
	if !ok {
		return nil, fmt.Errorf("bad address %s", ip.Address.String())
	}
	gw := net.IP(p.Unmap().Next().AsSlice())
	if gw.Equal(ip.Address.IP) {
		return nil, fmt.Errorf("%w for %s: it is its own subnet's first address; give IPAM a gateway", ErrNoGateway, ip.Address.String())
	}
	return gw, nil
}

// IfnameFree is ADD's first check: the spec says ADD fails when CNI_IFNAME
// exists in the container (ErrIfnameExists). The remains of an attachment
// an older version's DEL retired are cleared instead (see RetiredAlias).
func IfnameFree(host, cont Handle, ifname, netns string) error {
	if _, err := cont.LinkByName(ifname); err != nil {
		return nil
	}
	cleared, err := ClearRetiredPeer(host, cont, ifname)
	if err != nil {
		return err
	}
	if !cleared {
		return fmt.Errorf("CNI_IFNAME %s %w in %s: an interface of that name is there (this attachment's, from an ADD not yet DELeted, "+
			"or another one); DEL the attachment first, or choose another CNI_IFNAME", ifname, ErrIfnameExists, netns)
	}
	return nil
}

// CreateVethReplacing is CreateVeth that replaces a host end left with the
// same name by this very attachment (its container was recreated without
// a DEL) or retired by an older version; any other clash is an error.
func CreateVethReplacing(host, contH Handle, cont *nsutil.NS, spec VethSpec) (netlink.Link, netlink.Link, error) {
	hostLink, contLink, err := CreateVeth(host, contH, cont, spec)
	if errors.Is(err, ErrExists) {
		old, lerr := host.LinkByName(spec.HostName)
		switch {
		case nsutil.IsNotFound(lerr): // removed meanwhile
			return CreateVeth(host, contH, cont, spec)
		case lerr == nil && (old.Attrs().Alias == spec.Alias || old.Attrs().Alias == RetiredAlias):
			if derr := host.LinkDel(old); derr == nil || nsutil.IsNotFound(derr) {
				return CreateVeth(host, contH, cont, spec)
			}
		case lerr == nil:
			whose := fmt.Sprintf("alias %q", old.Attrs().Alias)
			if at, ok := ParseAlias(old.Attrs().Alias); ok {
				whose = fmt.Sprintf("network %s's attachment, by %s, in another namespace", at.Network, at.Plugin)
			}
			return nil, nil, fmt.Errorf("host link %s %w: %s; the host end's name comes from CNI_CONTAINERID and CNI_IFNAME, "+
				"which must name one attachment on a host: DEL that one first, or use another container ID or ifname",
				spec.HostName, ErrAttached, whose)
		}
	}
	return hostLink, contLink, err
}

// ValidLinkName applies the kernel's rules for a link name
// (dev_valid_name: 1-15 bytes, not "." or "..", no '/', ':' or white
// space) and refuses what the kernel would take as a pattern: with a '%'
// it picks the name itself ("br%d" makes br0), and the link would never
// be found by its configured name again. Control characters are refused
// too. One rule for every name netns-cni is configured with (bridge-nat's
// bridge, the node agent's ConfigMap).
func ValidLinkName(name string) error {
	if e := utils.ValidateInterfaceName(name); e != nil {
		return fmt.Errorf("%q is not a valid interface name: %s (at most 15 bytes; not '.' or '..'; no '/', ':' or white space)", name, e.Msg)
	}
	if strings.ContainsFunc(name, func(r rune) bool { return r == '%' || r < ' ' || r == 0x7f }) {
		return fmt.Errorf("%q is not a valid interface name: no '%%' (the kernel picks a name for it) or control characters", name)
	}
	return nil
}
