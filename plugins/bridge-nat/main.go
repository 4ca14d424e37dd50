// Command bridge-nat connects containers to a Linux bridge on the host with
// a veth pair each; the bridge can be their gateway (isGateway), and with
// ipMasq traffic leaving the network is masqueraded by one set of rules per
// network. A drop-in for the reference "bridge" plugin: same keys, same
// defaults, and behaves better — no fixed sleeps, no DAD waits, a bridge MAC
// that does not change under the containers, nothing left behind on
// failure, DEL that works when the namespace is gone.
package main

import (
	"context"
	"errors"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

const pluginName = "bridge-nat"

func main() {
	plugin.Main(plugin.Plugin{
		Name:   pluginName,
		About:  "netns-cni bridge-nat: veth into a Linux bridge acting as gateway, with masquerade",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	})
}

// attachment is everything a verb needs about one attachment.
type attachment struct {
	conf     *Config
	ipam     *plugin.IPAM // nil in L2 mode
	args     *skel.CmdArgs
	hostVeth string
	masq     plugin.Masq
}

func load(args *skel.CmdArgs) (*attachment, error) {
	conf, err := plugin.Load[Config](args)
	if err != nil {
		return nil, err
	}
	m, err := plugin.LoadIPAM(args)
	if err != nil {
		return nil, err
	}
	if m != nil && conf.DisableContainerInterface {
		return nil, plugin.ConfigError(`"disableContainerInterface" and "ipam": a container interface left down cannot use addresses; drop one of them`)
	}
	if m == nil && (conf.IsGateway || conf.IPMasq) {
		return nil, plugin.ConfigError(`"isGateway"/"ipMasq" need addresses, but "ipam" is missing or empty (L2 mode)`)
	}
	noMasq, _ := plugin.NoMasqCIDRs(conf.NonMasqueradeCIDRs) // validated by Load
	return &attachment{conf: conf, ipam: m, args: args,
		hostVeth: netconf.HostVethName("vb", args.ContainerID, args.IfName),
		masq:     plugin.Masq{Plugin: pluginName, Network: conf.Name, Backend: conf.IPMasqBackend, NoMasq: noMasq}}, nil
}

func cmdAdd(args *skel.CmdArgs) (types.Result, error) {
	a, err := load(args)
	if err != nil {
		return nil, err
	}
	mac, err := a.conf.MAC(args.Args)
	if err != nil {
		return nil, err
	}
	h, err := plugin.OpenTarget(args.Netns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	// Checked before anything is acquired, so an existing attachment stays whole.
	if err := netconf.IfnameFree(h.Host, h.Cont, args.IfName, args.Netns); err != nil {
		return nil, err
	}

	var rb plugin.Rollback
	defer func() { _ = rb.Undo() }()
	// Undone last: whether the network still needs its rules, and whether
	// a bridge this ADD made is still needed, is decided after this ADD's
	// port and addresses are gone.
	if a.conf.IPMasq {
		if err := rb.Push("nat-prepare", a.masq.RemoveIfUnused); err != nil {
			return nil, err
		}
	}
	ipamRes := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if a.ipam != nil {
		res, release, err := a.ipam.Add(context.Background())
		if err != nil {
			return nil, err
		}
		ipamRes = res
		if err := rb.Push("ipam", release); err != nil {
			return nil, err
		}
	}
	br, unlockBridge, err := a.setupBridge(h.Host, ipamRes, &rb)
	if err != nil {
		return nil, err
	}
	hostLink, contLink, err := netconf.CreateVethReplacing(h.Host, h.Cont, h.NS, netconf.VethSpec{
		HostName: a.hostVeth, ContName: args.IfName, MTU: a.conf.MTU, ContMAC: mac, MasterIndex: br.Attrs().Index,
		Alias: netconf.Alias(pluginName, a.conf.Name, args.ContainerID, args.IfName),
	})
	unlockBridge()
	if err != nil {
		return nil, err
	}
	if err := rb.Push("veth", func() error { return netconf.DelLink(h.Host, a.hostVeth) }); err != nil {
		return nil, err
	}
	if err := netconf.SetupPort(h.Host, hostLink, a.conf.portSpec()); err != nil {
		return nil, err
	}
	if err := rb.Push("port", noop); err != nil {
		return nil, err
	}
	if a.conf.MacSpoofChk {
		if err := a.masq.Locked(func() error {
			return nat.AddSpoofCheck(a.conf.Name, a.hostVeth, contLink.Attrs().HardwareAddr)
		}); err != nil {
			return nil, err
		}
		if err := rb.Push("macspoofchk", a.removeSpoofCheck); err != nil {
			return nil, err
		}
	}
	routes, err := a.setupContainer(h.Cont, contLink, ipamRes)
	if err != nil {
		return nil, err
	}
	if err := rb.Push("container", noop); err != nil {
		return nil, err
	}
	if a.conf.IsGateway || a.conf.IPMasq {
		if err := netconf.EnableForwarding(plugin.Families(ipamRes)); err != nil {
			return nil, err
		}
	}
	if err := rb.Push("forwarding", noop); err != nil {
		return nil, err
	}
	if a.conf.IPMasq {
		if err := a.masq.Ensure(ipamRes); err != nil {
			return nil, err
		}
		if err := rb.Push("nat", noop); err != nil {
			return nil, err
		}
	}
	res := a.result(ipamRes, br, hostLink, contLink, routes)
	rb.Commit()
	return res, nil
}

func noop() error { return nil }

func (a *attachment) removeSpoofCheck() error {
	return a.masq.Locked(func() error { return nat.RemoveSpoofCheck(a.conf.Name, a.hostVeth) })
}

func cmdDel(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	// From the host side only, whatever state the namespace is in. Order:
	// addresses, the port (retired: see netconf.Retire), its MAC check,
	// then what the network no longer needs.
	var errs []error
	if a.ipam != nil {
		errs = append(errs, a.ipam.Del(context.Background()))
	}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	errs = append(errs, netconf.Retire(host, a.hostVeth))
	if a.conf.MacSpoofChk {
		errs = append(errs, a.removeSpoofCheck())
	}
	if a.conf.IPMasq {
		errs = append(errs, a.masq.RemoveIfUnused())
	}
	if a.conf.RemoveEmptyBridge {
		errs = append(errs, a.removeBridgeIfEmpty(host))
	}
	return errors.Join(errs...)
}

func cmdCheck(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	prev := a.conf.PrevResult
	if prev == nil {
		return plugin.ConfigError(`"prevResult": missing; CHECK verifies the result of ADD`)
	}
	h, err := plugin.OpenTarget(args.Netns)
	if err != nil {
		return err
	}
	defer h.Close()
	own := plugin.OwnAddresses(prev, plugin.FindInterface(prev, args.IfName))
	if err := a.check(h.Handles, prev, own); err != nil {
		return err
	}
	if a.conf.IPMasq {
		if err := a.masq.Check(own); err != nil {
			return err
		}
	}
	if a.ipam == nil { // L2 mode: no reservation to check
		return nil
	}
	return a.ipam.Check(context.Background(), own)
}

func cmdGC(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	live, err := plugin.CollectLinks(pluginName, a.conf.Name, a.conf.ValidAttachments)
	errs := []error{err}
	host, err := nsutil.CurrentHandle()
	if err != nil {
		return err
	}
	defer host.Close()
	if a.conf.MacSpoofChk {
		errs = append(errs, a.masq.Locked(func() error {
			ports, err := nat.SpoofCheckedPorts(a.conf.Name)
			var errs []error
			for _, p := range ports {
				if !live[p] {
					errs = append(errs, nat.RemoveSpoofCheck(a.conf.Name, p))
				}
			}
			return errors.Join(append(errs, err)...)
		}))
	}
	if a.ipam != nil {
		errs = append(errs, a.ipam.GC(context.Background(), a.conf.ValidAttachments))
	}
	if a.conf.IPMasq {
		errs = append(errs, a.masq.RemoveIfUnused())
	}
	if a.conf.RemoveEmptyBridge {
		errs = append(errs, a.removeBridgeIfEmpty(host))
	}
	return errors.Join(errs...)
}

func cmdStatus(args *skel.CmdArgs) error {
	a, err := load(args)
	if err != nil {
		return err
	}
	if a.ipam != nil {
		if err := a.ipam.Status(context.Background()); err != nil {
			return err
		}
	}
	if a.conf.IPMasq {
		return a.masq.Available()
	}
	return nil
}

// bridgeLockTimeout bounds waits for a bridge's lock.
const bridgeLockTimeout = 10 * time.Second
