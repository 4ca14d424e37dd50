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
	"strings"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
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

// Alias is the ifalias written on a host veth: it names the plugin, the
// network and the attachment, so GC can list a network's veths and DEL can
// tell whether a network still has containers, with no state on disk.
func Alias(plugin, network, containerID, ifname string) string {
	return strings.Join([]string{"netns-cni", plugin, network, containerID, ifname}, ":")
}

// Attachment is what an alias says.
type Attachment struct {
	Plugin, Network, ContainerID, IfName string
}

// ParseAlias reads an alias written by Alias.
func ParseAlias(alias string) (Attachment, bool) {
	f := strings.Split(alias, ":")
	if len(f) != 5 || f[0] != "netns-cni" {
		return Attachment{}, false
	}
	return Attachment{f[1], f[2], f[3], f[4]}, true
}

// Attachments lists the host links a plugin made for a network.
func Attachments(h Handle, plugin, network string) (map[Attachment]netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	out := map[Attachment]netlink.Link{}
	for _, l := range links {
		if a, ok := ParseAlias(l.Attrs().Alias); ok && a.Plugin == plugin && a.Network == network {
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

// ErrExists means a link of that name already exists.
var ErrExists = errors.New("link already exists")

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

// AddRoute adds (or replaces) a route.
func AddRoute(h Handle, r *netlink.Route) error {
	if err := h.RouteReplace(r); err != nil {
		return fmt.Errorf("add route %s via %s: %w", r.Dst, r.Gw, err)
	}
	return nil
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

func setSysctl(path, val string) error {
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == val {
		return nil
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", path, val, err)
	}
	return nil
}

// DisableDAD turns off IPv6 duplicate address detection on a link of the
// calling process's namespace (the host), before it is set up. The host
// end needs a usable link-local address at once: the kernel sends the
// neighbour solicitations for forwarded traffic only from a non-tentative
// link-local address, so without this a container cannot reach another
// for the ~2 s DAD takes.
func DisableDAD(ifname string) error {
	p := "/proc/sys/net/ipv6/conf/" + ifname + "/accept_dad"
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil // IPv6 is off on this host
	}
	return setSysctl(p, "0")
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
		return nil, fmt.Errorf("address %s is its own subnet's first address; give IPAM a gateway", ip.Address.String())
	}
	return gw, nil
}

// IfnameFree is ADD's first check: the spec says ADD fails when CNI_IFNAME
// exists in the container. The remains of an attachment DEL'd a moment ago
// (see Retire) are cleared instead.
func IfnameFree(host, cont Handle, ifname, netns string) error {
	// The pair may be on its way out (its reaper deleting it right now):
	// look again for a little while before calling it taken.
	for range 100 {
		if _, err := cont.LinkByName(ifname); err != nil {
			return nil
		}
		cleared, err := ClearRetiredPeer(host, cont, ifname)
		if err != nil {
			return err
		}
		if !cleared {
			return fmt.Errorf("CNI_IFNAME %s already exists in %s; DEL the attachment first", ifname, netns)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return fmt.Errorf("CNI_IFNAME %s in %s: the remains of an earlier attachment are still going away; try again", ifname, netns)
}

// CreateVethReplacing is CreateVeth that replaces a host end left with the
// same name by this very attachment (its container was recreated without
// a DEL) or retired; any other clash is an error.
func CreateVethReplacing(host, contH Handle, cont *nsutil.NS, spec VethSpec) (netlink.Link, netlink.Link, error) {
	hostLink, contLink, err := CreateVeth(host, contH, cont, spec)
	if errors.Is(err, ErrExists) {
		old, lerr := host.LinkByName(spec.HostName)
		switch {
		case nsutil.IsNotFound(lerr): // its reaper removed it meanwhile
			return CreateVeth(host, contH, cont, spec)
		case lerr == nil && (old.Attrs().Alias == spec.Alias || old.Attrs().Alias == RetiredAlias):
			if derr := host.LinkDel(old); derr == nil || nsutil.IsNotFound(derr) {
				return CreateVeth(host, contH, cont, spec)
			}
		}
	}
	return hostLink, contLink, err
}
