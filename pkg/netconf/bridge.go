package netconf

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// BridgeAlias marks a bridge netns-cni created (so that only such a bridge
// is ever removed).
const BridgeAlias = "netns-cni:bridge"

// BridgeSpec says how a bridge should be.
type BridgeSpec struct {
	Name          string
	MTU           int
	Promisc       bool
	VlanFiltering bool
	// DisableDAD keeps its IPv6 link-local usable at once (see HostIPv6).
	DisableDAD bool
	// MachineID, from which with the name a new bridge's MAC derives: the
	// node's (MachineID, read only when a bridge is made) when empty.
	MachineID string
}

// MachineID is the node's machine ID, /etc/machine-id (or D-Bus's copy):
// 32 hex digits, "" when neither holds one (a file still "uninitialized",
// say).
func MachineID() string {
	for _, f := range []string{"/etc/machine-id", "/var/lib/dbus/machine-id"} {
		b, err := os.ReadFile(f)
		id := strings.TrimSpace(string(b))
		if _, hexErr := hex.DecodeString(id); err == nil && len(id) == 32 && hexErr == nil {
			return id
		}
	}
	return ""
}

// BridgeMAC is the MAC of a bridge netns-cni creates: locally
// administered, unicast, the same for a name on a node whenever the bridge
// is made again, and different between nodes (machine IDs), so bridges
// of two nodes that share an L2 segment (an uplink or a VXLAN port added
// to them) do not clash.
func BridgeMAC(machineID, name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("netns-cni bridge " + machineID + "\x00" + name))
	return net.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// EnsureBridge returns the bridge, creating it when missing, and whether
// this call created it. It does not set the bridge up (see SetUp): a
// failed ADD must not leave a bridge that was down up. A link of that name that is no bridge is an error.
// A new bridge gets a fixed MAC derived from spec's machine ID and its
// name (BridgeMAC): left to itself a Linux bridge takes the lowest MAC
// of its ports, which changes as containers come and go and leaves every
// neighbour cache stale.
func EnsureBridge(h Handle, spec BridgeSpec) (*netlink.Bridge, bool, error) {
	created := false
	l, err := h.LinkByName(spec.Name)
	if err != nil && nsutil.IsNotFound(err) {
		id := spec.MachineID
		if id == "" {
			id = MachineID()
		}
		mac := BridgeMAC(id, spec.Name)
		vf := spec.VlanFiltering
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: spec.Name, MTU: spec.MTU, HardwareAddr: mac, Alias: BridgeAlias, TxQLen: -1}}
		if vf {
			br.VlanFiltering = &vf
		}
		err = h.LinkAdd(br)
		switch {
		case err == nil:
			created = true
		case errors.Is(err, unix.EEXIST): // another ADD made it first
		case vf && errors.Is(err, unix.EOPNOTSUPP):
			return nil, false, ErrNoVlanFiltering
		default:
			return nil, false, fmt.Errorf("create bridge %s: %w", spec.Name, err)
		}
		if created {
			if err := HostIPv6(spec.Name, !spec.DisableDAD); err != nil {
				return nil, created, err
			}
		}
		l, err = h.LinkByName(spec.Name)
	}
	if err != nil {
		return nil, created, fmt.Errorf("bridge %s: %w", spec.Name, err)
	}
	br, ok := l.(*netlink.Bridge)
	if !ok {
		return nil, false, fmt.Errorf(`"bridge": %s exists and is a %s, %w; choose another name`, spec.Name, l.Type(), ErrNotBridge)
	}
	if created && br.Alias != BridgeAlias { // not every kernel takes the alias on create
		if err := h.LinkSetAlias(br, BridgeAlias); err != nil {
			return nil, created, fmt.Errorf("mark bridge %s: %w", spec.Name, err)
		}
		br.Alias = BridgeAlias
	}
	if spec.MTU != 0 && br.MTU != spec.MTU && created {
		if err := h.LinkSetMTU(br, spec.MTU); err != nil {
			return nil, created, fmt.Errorf("mtu %d on bridge %s: %w", spec.MTU, spec.Name, err)
		}
	}
	if spec.Promisc && br.Promisc == 0 {
		if err := h.SetPromiscOn(br); err != nil {
			return nil, created, fmt.Errorf("promisc on %s: %w", spec.Name, err)
		}
	}
	if spec.VlanFiltering && (br.VlanFiltering == nil || !*br.VlanFiltering) {
		if err := h.BridgeSetVlanFiltering(br, true); err != nil {
			if errors.Is(err, unix.EOPNOTSUPP) {
				return nil, created, ErrNoVlanFiltering
			}
			return nil, created, fmt.Errorf("vlan filtering on %s: %w", spec.Name, err)
		}
	}
	return br, created, nil
}

// Sentinel errors of the bridge, for errors.Is: the config asks for what
// this host cannot give.
var (
	// ErrNoVlanFiltering: the kernel's bridge has no VLAN filtering.
	ErrNoVlanFiltering = errors.New(`"vlan"/"vlanTrunk": this kernel's bridge has no VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING is off), so VLANs cannot be used on this host`)
	// ErrNotBridge: a link of the bridge's name exists and is no bridge.
	ErrNotBridge = errors.New("not a bridge")
	// ErrAddrConflict: the bridge has another address of the gateway's
	// subnet, and the config does not allow replacing it.
	ErrAddrConflict = errors.New("already has address")
)

// VlanMade says what EnsureVlanLink made, so that a failed ADD takes
// exactly that away again (RemoveVlanIfUnused).
type VlanMade struct {
	// Entry: the bridge itself joined the VLAN (it was not in it).
	Entry bool
	// Link: the VLAN device was created.
	Link bool
}

// EnsureVlanLink returns the VLAN device "<bridge>.<vid>" on the bridge,
// creating it when missing, for a gateway address in a VLAN: the bridge
// itself joins the VLAN tagged and the device carries the address. It
// reports what it made, also when it fails part-way.
func EnsureVlanLink(h Handle, br *netlink.Bridge, vid int, disableDAD bool) (netlink.Link, VlanMade, error) {
	var made VlanMade
	name := VlanLinkName(br.Name, vid)
	in, err := bridgeInVlan(h, br, vid)
	if err != nil {
		return nil, made, err
	}
	if !in {
		if err := h.BridgeVlanAdd(br, uint16(vid), false, false, true, false); err != nil {
			return nil, made, fmt.Errorf("add vlan %d to bridge %s: %w", vid, br.Name, err)
		}
		made.Entry = true
	}
	l, err := h.LinkByName(name)
	if err == nil {
		return l, made, nil
	}
	if !nsutil.IsNotFound(err) {
		return nil, made, fmt.Errorf("find vlan link %s: %w", name, err)
	}
	v := &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: br.Index, Alias: BridgeAlias}, VlanId: vid}
	if err := h.LinkAdd(v); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, made, fmt.Errorf("create vlan link %s: %w", name, err)
	}
	made.Link = true
	if err := HostIPv6(name, !disableDAD); err != nil {
		return nil, made, err
	}
	if l, err = h.LinkByName(name); err != nil {
		return nil, made, fmt.Errorf("vlan link %s: %w", name, err)
	}
	return l, made, SetUp(h, l)
}

// bridgeInVlan reports whether the bridge itself is a member of vid.
func bridgeInVlan(h Handle, br *netlink.Bridge, vid int) (bool, error) {
	all, err := h.BridgeVlanList()
	if err != nil {
		return false, fmt.Errorf("list vlans of %s: %w", br.Name, err)
	}
	for _, v := range all[int32(br.Index)] {
		if int(v.Vid) == vid {
			return true, nil
		}
	}
	return false, nil
}

// RemoveVlanIfUnused takes away what EnsureVlanLink made for vid, unless
// containers use the bridge: a failed ADD's VLAN device and entry.
func RemoveVlanIfUnused(h Handle, bridge string, vid int, made VlanMade) error {
	if made == (VlanMade{}) {
		return nil
	}
	br, err := unusedBridge(h, bridge)
	if br == nil {
		return err
	}
	var errs []error
	if made.Link {
		errs = append(errs, DelLink(h, VlanLinkName(bridge, vid)))
	}
	if made.Entry {
		if err := h.BridgeVlanDel(br, uint16(vid), false, false, true, false); err != nil && !nsutil.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("remove vlan %d from bridge %s: %w", vid, bridge, err))
		}
	}
	return errors.Join(errs...)
}

// VlanLinkName is the name of the bridge's VLAN link for vid, within 15 bytes.
func VlanLinkName(bridge string, vid int) string {
	suffix := "." + strconv.Itoa(vid)
	if len(bridge)+len(suffix) > 15 {
		bridge = bridge[:15-len(suffix)]
	}
	return bridge + suffix
}

// PortSpec says how a bridge port is set up.
type PortSpec struct {
	Hairpin, Isolated bool
	// Vlan is the port's untagged VLAN (0: none); Trunk its tagged ones.
	Vlan                int
	Trunk               []int
	PreserveDefaultVlan bool
}

// SetupPort applies hairpin, isolation and VLANs to a port and sets it up.
func SetupPort(h Handle, port netlink.Link, spec PortSpec) error {
	if spec.Hairpin {
		if err := h.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("hairpin on %s: %w", port.Attrs().Name, err)
		}
	}
	if spec.Isolated {
		if err := h.LinkSetIsolated(port, true); err != nil {
			return fmt.Errorf("isolate %s: %w", port.Attrs().Name, err)
		}
	}
	if spec.Vlan > 0 || len(spec.Trunk) > 0 {
		if !spec.PreserveDefaultVlan {
			if err := h.BridgeVlanDel(port, 1, true, true, false, true); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("remove default vlan from %s: %w", port.Attrs().Name, err)
			}
		}
		if spec.Vlan > 0 {
			if err := h.BridgeVlanAdd(port, uint16(spec.Vlan), true, true, false, true); err != nil {
				return fmt.Errorf("vlan %d on %s: %w", spec.Vlan, port.Attrs().Name, err)
			}
		}
		for _, vid := range spec.Trunk {
			if err := h.BridgeVlanAdd(port, uint16(vid), false, false, false, true); err != nil {
				return fmt.Errorf("trunk vlan %d on %s: %w", vid, port.Attrs().Name, err)
			}
		}
	}
	return SetUp(h, port)
}

// Ports lists the bridge's ports that are in service (not retired).
func Ports(h Handle, br netlink.Link) ([]netlink.Link, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index && l.Attrs().Alias != RetiredAlias {
			out = append(out, l)
		}
	}
	return out, nil
}

// GatewayChange is what EnsureGateways changed on a link: the addresses it
// added and those it removed to make room (forceAddress).
type GatewayChange struct {
	Added   []*net.IPNet
	Removed []netlink.Addr
}

// EnsureGateways puts the gateway of each of ips (see Gateway) on link,
// the bridge, and sets it as the address's gateway for the result. It
// returns what it changed, also when it fails part-way, so that a
// rollback can undo it (RevertGatewaysIfUnused). See EnsureGatewayAddr for
// force.
func EnsureGateways(h Handle, link netlink.Link, ips []*current.IPConfig, force, nodad bool) (GatewayChange, error) {
	var ch GatewayChange
	for _, ip := range ips {
		gw, err := Gateway(ip)
		if err != nil {
			return ch, err
		}
		ip.Gateway = gw
		gwNet := &net.IPNet{IP: gw, Mask: ip.Address.Mask}
		ok, removed, err := EnsureGatewayAddr(h, link, gwNet, force, nodad, `"bridge"`)
		ch.Removed = append(ch.Removed, removed...)
		if err != nil {
			return ch, err
		}
		if ok {
			ch.Added = append(ch.Added, gwNet)
		}
	}
	return ch, nil
}

// EnsureGatewayAddr puts addr on link. An address of the same family that
// differs is replaced when force, else it is an error that says what to
// do (for IPv6, other addresses whose subnets do not overlap may stay). It
// reports whether it added the address, and the addresses it removed.
func EnsureGatewayAddr(h Handle, link netlink.Link, addr *net.IPNet, force, nodad bool, key string) (bool, []netlink.Addr, error) {
	family := netlink.FAMILY_V4
	if addr.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	addrs, err := h.AddrList(link, family)
	if err != nil {
		return false, nil, fmt.Errorf("list addresses of %s: %w", link.Attrs().Name, err)
	}
	var removed []netlink.Addr
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if a.IP.Equal(addr.IP) && a.Mask.String() == addr.Mask.String() {
			return false, removed, nil
		}
		if family == netlink.FAMILY_V6 && !a.Contains(addr.IP) && !addr.Contains(a.IP) {
			continue
		}
		if !force {
			return false, removed, fmt.Errorf(`%s %s %w %s, not %s that this network's gateway needs; set "forceAddress": true to replace it, or give this network its own %s`,
				key, link.Attrs().Name, ErrAddrConflict, a.IPNet, addr, key)
		}
		if err := h.AddrDel(link, &a); err != nil {
			return false, removed, fmt.Errorf("remove stale address %s from %s: %w", a.IPNet, link.Attrs().Name, err)
		}
		removed = append(removed, a)
	}
	a := &netlink.Addr{IPNet: addr}
	if family == netlink.FAMILY_V6 && nodad {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(link, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, removed, fmt.Errorf("add gateway %s to %s: %w", addr, link.Attrs().Name, err)
	}
	return true, removed, nil
}

// unusedBridge returns the bridge when no container uses it (no port in
// service), nil when it is in use or gone.
func unusedBridge(h Handle, name string) (netlink.Link, error) {
	br, err := h.LinkByName(name)
	if nsutil.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find bridge %s: %w", name, err)
	}
	ports, err := Ports(h, br)
	if err != nil || len(ports) > 0 {
		return nil, err
	}
	return br, nil
}

// RevertGateways undoes a failed ADD's EnsureGateways on link (the bridge
// or its VLAN link). The addresses it replaced (forceAddress) come back
// whoever is on the bridge: most likely they are the gateways of the
// containers there, and having them back takes nothing from anyone. The
// gateways it added go only when no container is on the bridge: one that
// is may use the same address (an ADD of the network that succeeded
// meanwhile, another network with the same gateway).
func RevertGateways(h Handle, bridge string, link netlink.Link, ch GatewayChange) error {
	if len(ch.Added) == 0 && len(ch.Removed) == 0 {
		return nil
	}
	unused, err := unusedBridge(h, bridge) // nil when in use, or gone
	if err != nil {
		return err
	}
	if unused != nil {
		for _, a := range ch.Added {
			if err := h.AddrDel(link, &netlink.Addr{IPNet: a}); err != nil && !nsutil.IsNotFound(err) {
				return fmt.Errorf("remove gateway %s: %w", a, err)
			}
		}
	}
	for _, a := range ch.Removed {
		// A bridge gone meanwhile took its addresses along: nothing to restore.
		if err := h.AddrAdd(link, &a); err != nil && !errors.Is(err, unix.EEXIST) && !nsutil.IsNotFound(err) {
			return fmt.Errorf("restore address %s: %w", a.IPNet, err)
		}
	}
	return nil
}

// SetDownIfUnused sets the bridge down when no container uses it.
func SetDownIfUnused(h Handle, bridge string) error {
	br, err := unusedBridge(h, bridge)
	if br == nil {
		return err
	}
	if err := h.LinkSetDown(br); err != nil && !nsutil.IsNotFound(err) {
		return fmt.Errorf("set %s down: %w", bridge, err)
	}
	return nil
}

// RemoveBridgeIfEmpty deletes the bridge when netns-cni made it (its
// alias says so) and no container is on it. The caller holds the bridge's
// lock.
func RemoveBridgeIfEmpty(h Handle, bridge string) error {
	br, err := unusedBridge(h, bridge)
	if br == nil {
		return err
	}
	if _, ok := br.(*netlink.Bridge); !ok || br.Attrs().Alias != BridgeAlias {
		return nil // not ours to remove
	}
	return DelLink(h, bridge)
}

// CheckPort checks that the bridge exists, is up and is a bridge, and that
// port is one of its ports (for CHECK). It returns the bridge.
func CheckPort(h Handle, bridge string, port netlink.Link) (netlink.Link, error) {
	br, err := CheckLink(h, bridge, "host")
	if err != nil {
		return nil, err
	}
	if _, ok := br.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("host: %s is no longer a bridge", bridge)
	}
	if port.Attrs().MasterIndex != br.Attrs().Index {
		return nil, fmt.Errorf("host: %s is not a port of %s", port.Attrs().Name, bridge)
	}
	return br, nil
}
