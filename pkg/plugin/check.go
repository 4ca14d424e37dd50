package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/filter"
	"github.com/netns-cni/netns-cni/pkg/lock"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Checked is an attachment CHECK found in place so far, for the driver's
// part of the check.
type Checked struct {
	*Attachment
	Target *Target
	// Prev is prevResult; Own is it with only this attachment's addresses.
	Prev, Own *current.Result
	// HostLink and ContLink are the pair's ends, found and up.
	HostLink, ContLink netlink.Link
	// Reference: the reference ptp or bridge made the attachment (before
	// the node switched to netns-cni); filter rules of its own are its own.
	Reference bool
	// Iface is the container interface as prevResult lists it.
	Iface *current.Interface
}

// check is CHECK, written once: prevResult names the container interface;
// the host end is there and up, the container end there and up (unless
// the driver leaves it down); the container has its addresses and
// prevResult's routes; then the driver's part; then forwarding, the
// network's masquerade rules and the IPAM reservation.
func (r runner[T, D]) check(args *skel.CmdArgs) error {
	d, a, err := r.load(args)
	if err != nil {
		return err
	}
	prev := a.Conf.PrevResult
	if prev == nil {
		return ConfigError(`"prevResult": missing; CHECK verifies the result of ADD`)
	}
	idx := FindInterface(prev, args.IfName)
	if idx < 0 {
		return ConfigError(`"prevResult": has no interface %s with a sandbox`, args.IfName)
	}
	t, err := OpenTarget(args.Netns)
	if err != nil {
		return err
	}
	defer t.Close()
	c := &Checked{Attachment: a, Target: t, Prev: prev, Own: OwnAddresses(prev, idx), Iface: prev.Interfaces[idx]}
	if c.HostLink, err = netconf.CheckLink(t.Host, a.HostVeth, "host"); err != nil {
		if ref := referenceHostLink(t.Host, prev); ref != nil {
			return c.checkReference(d, ref)
		}
		if unknown(a, err) {
			return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no attachment of container %s with interface %s on network %q "+
				"(no host link, no addresses reserved); ADD it first", args.ContainerID, args.IfName, a.Conf.Name), "")
		}
		if name := missingForeignHostEnd(t.Host, prev, a); name != "" {
			return fmt.Errorf("host: %s, the host end prevResult names (made by the reference plugin), not found", name)
		}
		return err
	}
	if c.ContLink, err = checkContainerLink(c); err != nil {
		return err
	}
	if err := c.checkContainer(); err != nil {
		return err
	}
	if err := d.Check(c); err != nil {
		return err
	}
	return checkHostState(c)
}

// checkContainer checks the container interface's MAC address (the one
// prevResult gives, as the reference does: bridge-nat's spoof check lets
// only it out), its addresses and prevResult's routes. (Not its MTU: a
// config edited since, the reference's own default, or a chained tuning
// plugin may each have set another.)
func (c *Checked) checkContainer() error {
	attrs := c.ContLink.Attrs()
	if c.Iface.Mac != "" && !strings.EqualFold(attrs.HardwareAddr.String(), c.Iface.Mac) {
		return fmt.Errorf("container: %s has MAC address %s, prevResult says %s", attrs.Name, attrs.HardwareAddr, c.Iface.Mac)
	}
	for _, ip := range c.Own.IPs {
		if err := netconf.CheckAddr(c.Target.Cont, c.ContLink, &ip.Address, "container"); err != nil {
			return err
		}
	}
	for _, r := range c.Prev.Routes {
		if err := netconf.CheckResultRoute(c.Target.Cont, c.ContLink, r, "container"); err != nil {
			return err
		}
	}
	return nil
}

// referenceHostLink is the host veth prevResult names (an interface
// without a sandbox) when it is there and no netns-cni link — the host
// end of an attachment the reference ptp or bridge made before the node
// switched to netns-cni — or nil.
func referenceHostLink(host netconf.Handle, prev *current.Result) netlink.Link {
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" {
			continue
		}
		if l, err := host.LinkByName(iface.Name); err == nil && l.Type() == "veth" && !strings.HasPrefix(l.Attrs().Alias, "netns-cni:") {
			return l
		}
	}
	return nil
}

// missingForeignHostEnd is a host interface prevResult names that is none
// of netns-cni's names for the attachment (the reference made it) and is
// not on the host, or "": CHECK names it rather than the netns-cni link
// that never was.
func missingForeignHostEnd(host netconf.Handle, prev *current.Result, a *Attachment) string {
	for _, iface := range prev.Interfaces {
		if iface.Sandbox != "" || iface.Name == a.Traits.Bridge || slices.Contains(a.hostVethNames(), iface.Name) {
			continue
		}
		if _, err := host.LinkByName(iface.Name); nsutil.IsNotFound(err) {
			return iface.Name
		}
	}
	return ""
}

// checkReference is CHECK of an attachment the reference made (see
// adoptReference for its DEL): its veth pair — the host end up and the
// container interface's peer —, the container's addresses and routes, the
// driver's part (the same layout: point-to-point routes and gateways, or
// the bridge port and gateways), forwarding and the reservation. Its
// masquerade state and MAC check are the reference's own and are left to
// it.
func (c *Checked) checkReference(d Driver, hostLink netlink.Link) error {
	if hostLink.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("host: %s (made by the reference plugin) is down", hostLink.Attrs().Name)
	}
	var err error
	if c.ContLink, err = checkContainerLink(c); err != nil {
		return err
	}
	if c.ContLink.Attrs().ParentIndex != hostLink.Attrs().Index {
		return fmt.Errorf("host: %s is not the peer of the container's %s", hostLink.Attrs().Name, c.Args.IfName)
	}
	c.HostLink, c.Reference = hostLink, true
	if err := c.checkContainer(); err != nil {
		return err
	}
	if err := d.Check(c); err != nil {
		return err
	}
	return checkHostState(c)
}

func checkContainerLink(c *Checked) (netlink.Link, error) {
	if !c.Traits.ContainerDown {
		return netconf.CheckLink(c.Target.Cont, c.Args.IfName, "container")
	}
	l, err := c.Target.Cont.LinkByName(c.Args.IfName)
	if err != nil {
		return nil, fmt.Errorf("container: interface %s: %w", c.Args.IfName, err)
	}
	return l, nil
}

// checkHostState checks what is not on the links: forwarding, the
// network's masquerade, FORWARD and port-mapping rules (for an attachment
// of ours: the reference has rules of its own), the reservation.
func checkHostState(c *Checked) error {
	if c.Traits.Forwarding {
		v4, v6 := Families(c.Own)
		if v4 && !netconf.ForwardingOn(false) {
			return errors.New("host: IPv4 forwarding is off")
		}
		if v6 && !netconf.ForwardingOn(true) {
			return errors.New("host: IPv6 forwarding is off")
		}
	}
	if c.Reference {
		return c.checkReservation()
	}
	n := c.Network()
	if c.Conf.IPMasq {
		if err := n.CheckMasquerade(c.Own); err != nil {
			return err
		}
	}
	if n.ForwardAccept {
		if err := n.CheckForwardAccept(c.Own); err != nil {
			return err
		}
	}
	if err := c.checkPorts(c.Own); err != nil {
		return err
	}
	return c.checkReservation()
}

func (c *Checked) checkReservation() error {
	if c.IPAM == nil { // L2 mode: no reservation to check
		return nil
	}
	return c.IPAM.Check(context.Background(), c.Own)
}

// status is STATUS: code 50 when an ADD could not get addresses now, or
// the masquerade backend cannot work here. Cheap: containerd runs it every
// few seconds.
func (r runner[T, D]) status(args *skel.CmdArgs) error {
	_, a, err := r.load(args)
	if err != nil {
		return err
	}
	if a.IPAM != nil {
		if err := a.IPAM.Status(context.Background()); err != nil {
			return err
		}
	}
	if err := lock.Ready(); err != nil {
		return UnavailableError("no lock can be taken, so no ADD that changes the host's rules or a bridge can run: %v", err)
	}
	if a.Conf.IPMasq || a.Network().HostPorts {
		if err := a.Network().Available(); err != nil {
			return err
		}
	}
	if a.Traits.Forwarding && !a.Conf.AcceptsForward() && a.IPAM != nil && a.IPAM.Local != nil {
		side := filter.HostSide{Name: a.Traits.GatewayLink}
		if side.Name == "" {
			side = filter.HostSide{Name: r.info.VethPrefix, Prefix: true}
		}
		blocked, err := filter.ForwardBlocked(a.IPAM.Local.Subnets(), side)
		if err == nil && blocked != "" {
			return UnavailableError(`%s: the pods of network %q reach nothing beyond the host; "forwardAccept" is false, so accept the network's traffic in FORWARD yourself, or set it true`, blocked, a.Conf.Name)
		}
	}
	return nil
}

// unknown reports whether CHECK's missing host link (err) means the
// attachment was never made, or is gone whole: the store holds no address
// for it either (code 3, unknown container, rather than a broken one).
func unknown(a *Attachment, err error) bool {
	var nf netlink.LinkNotFoundError
	if !errors.As(err, &nf) {
		return false
	}
	if a.IPAM == nil {
		return true
	}
	held, ok := a.IPAM.Held()
	return ok && len(held) == 0
}
