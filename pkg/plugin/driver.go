package plugin

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// A veth plugin connects a container to the host with a veth pair. Its
// verbs are the same sequence whatever the plugin; pkg/plugin writes ADD,
// DEL, CHECK, GC and STATUS once and asks the plugin's Driver only for
// what is its own: a bridge to attach the host end to, or point-to-point
// routes. A plugin package is its config, which implements Driver.

// Info describes a veth plugin.
type Info struct {
	// Name is the binary name, in logs and in the host links' aliases.
	Name string
	// About is one line on what the plugin does, for a person who runs the
	// binary by hand.
	About string
	// VethPrefix starts the host end's name ("vp", "vb"): 2 bytes.
	VethPrefix string
	// Steps are the driver's own ADD steps, in order.
	Steps []Step
}

// ValidateInfo reports what is wrong with a plugin's Info: a name, a
// VethPrefix that VethPrefixes knows (other plugins' DEL and GC find its
// host links only under a known prefix), steps named once. Each plugin's
// tests call it.
func ValidateInfo(i Info) error {
	var errs []error
	if i.Name == "" || i.About == "" {
		errs = append(errs, errors.New("name and about must be set"))
	}
	if !slices.Contains(VethPrefixes, i.VethPrefix) {
		errs = append(errs, fmt.Errorf("VethPrefix %q is not in VethPrefixes %v", i.VethPrefix, VethPrefixes))
	}
	steps := i.steps()
	for j, s := range steps {
		if slices.Contains(steps[:j], s) {
			errs = append(errs, fmt.Errorf("step %q named twice", s))
		}
	}
	return errors.Join(errs...)
}

// steps are all the ADD steps of the plugin: the common ones and the
// driver's.
func (i Info) steps() []Step { return append(append([]Step(nil), CommonSteps...), i.Steps...) }

// Traits are what the common verbs need to know of a driver's attachment.
type Traits struct {
	// Forwarding: the host routes the network's traffic, so ADD turns IP
	// forwarding on and CHECK requires it.
	Forwarding bool
	// ContainerDown: the container interface is left down on purpose.
	ContainerDown bool
	// Bridge is the bridge the host ends are ports of, "" for none: the
	// host side of every attachment, which port mappings mark for traffic
	// from the host's loopback.
	Bridge string
	// GatewayLink is the host link the network's traffic is routed from
	// when it is not each attachment's host end: the bridge, or its VLAN
	// link (STATUS reads FORWARD rules for it).
	GatewayLink string
}

// Driver is a veth plugin's own part of the verbs. The plugin's config
// struct implements it (embedding VethConf); the optional Preparer and
// Teardowner add host-side state of the driver's own.
type Driver interface {
	Config
	// Veth is the shared config (promoted from the embedded VethConf).
	Veth() *VethConf
	// CheckIPAM reports a config that cannot work with the addresses m
	// gives, or without any (m is nil when "ipam" is missing or empty).
	CheckIPAM(m *IPAM) error
	// Traits says how the common verbs treat the attachments.
	Traits() Traits
	// Setup configures both ends of the new pair in ADD: ports, addresses,
	// routes, as steps of its own (Add.Run).
	Setup(add *Add) error
	// Check verifies the driver's part of an attachment against
	// prevResult in CHECK.
	Check(c *Checked) error
}

// Preparer is a driver with host-side links the pair attaches to.
type Preparer interface {
	// Prepare runs in ADD after IPAM and before the pair exists, as steps
	// of its own. It sets add.Master to the link the host end becomes a
	// port of, and may return a func that the common ADD calls right after
	// the veth step, attached or failed (to release a lock on the master),
	// or nil. On an error it releases what it holds itself.
	Prepare(add *Add) (attached func(), err error)
}

// Teardowner is a driver with host-side state beside the host link.
type Teardowner interface {
	// Teardown is DEL's part, after the host link went: remove what the
	// driver made beside it that the network does not own (an empty
	// bridge). What is gone already is no error. host is a netlink handle
	// in the host.
	Teardown(a *Attachment, host nsutil.Handle) error
	// Collect is GC's part, once the host links of attachments not kept
	// are gone.
	Collect(a *Attachment, host nsutil.Handle) error
}

// Attachment is one container interface on a network, as every verb sees
// it: the request, the config, the addresses' source and the host link's
// name.
type Attachment struct {
	Args *skel.CmdArgs
	Info Info
	Conf *VethConf
	// IPAM is nil when the network has no addresses (L2 mode).
	IPAM *IPAM
	// HostVeth is the host end's name, derived from the attachment so that
	// DEL and GC find it without the container's namespace.
	HostVeth string
	Traits   Traits
}

// Network is the attachment's network: its host-wide state.
func (a *Attachment) Network() *Network {
	c := a.Conf
	n := &Network{Name: c.Name, Masquerade: c.IPMasq, Backend: c.IPMasqBackend, NoMasq: c.NoMasq(),
		ForwardAccept: a.Traits.Forwarding && c.AcceptsForward(),
		HostPorts:     c.Capabilities["portMappings"] || len(c.RuntimeConfig.PortMappings) > 0}
	if a.IPAM != nil && a.IPAM.Local != nil {
		n.others = func() (bool, error) { return a.IPAM.Local.HeldByOthers(a.IPAM.owner) }
		n.stampDir = a.IPAM.Local.MetaDir()
	}
	return n
}

// VethPrefixes start the host end's name of every netns-cni veth plugin
// (Info.VethPrefix): DEL and GC find an attachment whichever of them made
// it, as they must on a node whose conflist switched plugins under live
// pods.
var VethPrefixes = []string{"vp", "vb"}

// hostVethNames are the names the attachment's host end can have: this
// plugin's own first, then the other plugins'.
func (a *Attachment) hostVethNames() []string {
	names := []string{a.HostVeth}
	for _, p := range VethPrefixes {
		if n := netconf.HostVethName(p, a.Args.ContainerID, a.Args.IfName); n != a.HostVeth {
			names = append(names, n)
		}
	}
	return names
}

// alias is the ifalias of the attachment's host link (netconf.Alias).
func (a *Attachment) alias() string {
	return netconf.Alias(a.Info.Name, a.Conf.Name, a.Args.ContainerID, a.Args.IfName)
}

// Add is one ADD in progress, as a driver sees it.
type Add struct {
	*Attachment
	// Target is the container's namespace and netlink handles in it and
	// in the host.
	Target *Target
	// IPAMResult is what IPAM reserved (empty in L2 mode): IPs, routes,
	// DNS. A driver may fill in each address's gateway for the result.
	IPAMResult *current.Result
	// Master is the link the host end becomes a port of (set by Prepare).
	Master netlink.Link
	// HostLink and ContLink are the pair's ends, once StepVeth ran.
	HostLink, ContLink netlink.Link
	// Routes are the container's routes as installed, for the result.
	Routes []*types.Route

	steps steps
}

// Run runs do as the ADD's step name. do returns the undo of whatever it
// made — also when it fails part-way — or nil when nothing of its own needs
// undoing (addresses on a link that a rollback deletes anyway); the ADD
// runs the undo if it fails at this step or later.
func (a *Add) Run(name Step, do func(*Add) (undo func() error, err error)) error {
	return a.steps.run(name, func() (func() error, error) { return do(a) })
}

// VethMain runs a veth plugin: the dispatcher of Main with the common
// verbs, D the plugin's config type.
func VethMain[T any, D interface {
	*T
	Driver
}](info Info) {
	if listSteps(info) {
		os.Exit(0)
	}
	r := runner[T, D]{info: info}
	Main(Plugin{Name: info.Name, About: info.About,
		Add: r.add, Del: r.del, Check: r.check, GC: r.gc, Status: r.status})
}

// runner loads the config and the attachment for each verb.
type runner[T any, D interface {
	*T
	Driver
}] struct {
	info Info
}

// load decodes and validates the config (code 6 or 7), loads IPAM and
// lets the driver check the two together.
func (r runner[T, D]) load(args *skel.CmdArgs) (D, *Attachment, error) {
	conf, err := Load[T, D](args)
	if err != nil {
		return nil, nil, err
	}
	m, err := LoadIPAM(args)
	if err != nil {
		return nil, nil, err
	}
	if err := conf.CheckIPAM(m); err != nil {
		return nil, nil, err
	}
	if err := conf.Veth().checkMTU(m); err != nil {
		return nil, nil, err
	}
	return conf, r.attachment(args, conf, m), nil
}

// loadLenient is load for DEL and GC (see LoadLenient): it fails only on
// JSON that does not decode; every other problem is logged and ignored,
// and IPAM is whatever locates the store that holds the addresses.
func (r runner[T, D]) loadLenient(args *skel.CmdArgs) (D, *Attachment, error) {
	conf, err := LoadLenient[T, D](args)
	if err != nil {
		return nil, nil, err
	}
	m := loadIPAMLenient(args)
	if err := conf.CheckIPAM(m); err != nil {
		slog.Warn("invalid config ignored: removing what can be found", "problem", err.Error())
	}
	return conf, r.attachment(args, conf, m), nil
}

func (r runner[T, D]) attachment(args *skel.CmdArgs, conf D, m *IPAM) *Attachment {
	return &Attachment{Args: args, Info: r.info, Conf: conf.Veth(), IPAM: m, Traits: conf.Traits(),
		HostVeth: netconf.HostVethName(r.info.VethPrefix, args.ContainerID, args.IfName)}
}
