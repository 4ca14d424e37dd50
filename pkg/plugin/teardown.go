package plugin

import (
	"context"
	"errors"
	"fmt"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// del is DEL, written once for every veth plugin. It works from the host
// side only: the container's namespace may be empty, gone or half torn
// down. Every step runs; what is gone already counts as done. The order:
//
//  1. The host link, retired at once (down and marked; see netconf.Retire),
//     which takes the container off its link and the host routes with it.
//     First, because an address must not return to the pool while the old
//     port can still answer for it on the same L2 segment.
//  2. The driver's teardown: what it made beside the link (a port's MAC
//     check, an empty bridge).
//  3. The network's masquerade rules, if no attachment of the network is
//     left, whichever plugin made it.
//  4. IPAM, last, and only once the link is gone: when the link could not
//     be removed the addresses stay reserved, and the runtime's next DEL
//     tries both again.
func (r runner[T, D]) del(args *skel.CmdArgs) error {
	d, a, host, err := r.loadOnHost(args)
	if err != nil {
		return err
	}
	defer host.Close()
	linkErr := netconf.Retire(host, a.HostVeth)
	errs := []error{linkErr}
	if t, ok := any(d).(Teardowner); ok {
		errs = append(errs, t.Teardown(a, host))
	}
	if a.Conf.IPMasq {
		errs = append(errs, a.Network().RemoveIfUnused(""))
	}
	if a.IPAM != nil {
		if linkErr != nil {
			errs = append(errs, fmt.Errorf("addresses stay reserved until %s is gone", a.HostVeth))
		} else {
			errs = append(errs, a.IPAM.Del(context.Background()))
		}
	}
	return errors.Join(errs...)
}

// gc is GC, in DEL's order: the host links of attachments not in
// cni.dev/valid-attachments (of any netns-cni plugin: the list is the
// network's), the driver's state of those, the network's rules if nothing
// is left, and the reservations of attachments not listed. It goes on past
// failures and reports them all.
func (r runner[T, D]) gc(args *skel.CmdArgs) error {
	d, a, host, err := r.loadOnHost(args)
	if err != nil {
		return err
	}
	defer host.Close()
	kept, err := collectLinks(host, a.Conf.Name, a.Conf.ValidAttachments)
	errs := []error{err}
	if t, ok := any(d).(Teardowner); ok {
		errs = append(errs, t.Collect(a, host, kept))
	}
	if a.Conf.IPMasq {
		errs = append(errs, a.Network().RemoveIfUnused(""))
	}
	if a.IPAM != nil {
		errs = append(errs, a.IPAM.GC(context.Background(), a.Conf.ValidAttachments))
	}
	return errors.Join(errs...)
}

// loadOnHost is load plus a netlink handle in the host, for the verbs that
// work from the host side only. Close the handle when done.
func (r runner[T, D]) loadOnHost(args *skel.CmdArgs) (D, *Attachment, nsutil.Handle, error) {
	d, a, err := r.load(args)
	if err != nil {
		return nil, nil, nsutil.Handle{}, err
	}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return nil, nil, nsutil.Handle{}, err
	}
	return d, a, host, nil
}

// collectLinks deletes every retired link and the host links of network
// whose attachment is not in valid, and returns the names of those kept.
func collectLinks(host nsutil.Handle, network string, valid []types.GCAttachment) (map[string]bool, error) {
	keep := map[[2]string]bool{}
	for _, v := range valid {
		keep[[2]string{netconf.Key(v.ContainerID), v.IfName}] = true
	}
	errs := []error{netconf.ReapRetired(host)}
	links, err := netconf.Attachments(host, network)
	errs = append(errs, err)
	kept := map[string]bool{}
	for att, l := range links {
		if keep[[2]string{att.ContainerID, att.IfName}] {
			kept[l.Attrs().Name] = true
			continue
		}
		errs = append(errs, netconf.DelLink(host, l.Attrs().Name))
	}
	return kept, errors.Join(errs...)
}
