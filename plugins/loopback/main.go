// Command loopback brings up the loopback interface in a container's network
// namespace. ADD sets lo up and returns it with its addresses (or passes a
// previous result through), DEL sets it down, CHECK verifies it is up.
package main

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

func main() {
	plugin.Main(plugin.Plugin{
		Name:   "loopback",
		About:  "netns-cni loopback: brings lo up in the container's network namespace",
		Add:    cmdAdd,
		Del:    cmdDel,
		Check:  cmdCheck,
		GC:     cmdGC,
		Status: cmdStatus,
	})
}

// Config is the loopback config: only the shared keys.
type Config struct {
	plugin.NetConf
}

// lo is the loopback link, whatever CNI_IFNAME says.
const lo = "lo"

func cmdAdd(args *skel.CmdArgs) (types.Result, error) {
	conf, err := plugin.Load[Config](args)
	if err != nil {
		return nil, err
	}
	target, err := plugin.OpenNetns(args.Netns)
	if err != nil {
		return nil, err
	}
	defer target.Close()

	addrs, err := setLo(target, true)
	if err != nil {
		return nil, err
	}
	if conf.PrevResult != nil {
		return conf.PrevResult, nil
	}
	return loResult(args.Netns, addrs), nil
}

func cmdDel(args *skel.CmdArgs) error {
	if _, err := plugin.LoadLenient[Config](args); err != nil {
		return err
	}
	target, err := plugin.OpenNetnsForDel(args.Netns)
	if err != nil || target == nil {
		return err // nil when the namespace is already gone
	}
	defer target.Close()
	_, err = setLo(target, false)
	return err
}

func cmdCheck(args *skel.CmdArgs) error {
	if _, err := plugin.Load[Config](args); err != nil {
		return err
	}
	target, err := plugin.OpenNetns(args.Netns)
	if err != nil {
		return err
	}
	defer target.Close()
	h, err := target.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByName(lo)
	if err != nil {
		return fmt.Errorf("check %s in %s: %w", lo, args.Netns, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return errors.New("check: lo is down in " + args.Netns)
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("check %s addresses: %w", lo, err)
	}
	if !slices.ContainsFunc(addrs, func(a netlink.Addr) bool { return a.IP.IsLoopback() }) {
		return errors.New("check: lo has no IPv4 loopback address in " + args.Netns)
	}
	return nil
}

// cmdGC has nothing to collect: loopback keeps no state outside the
// namespace, which goes with the container.
func cmdGC(args *skel.CmdArgs) error {
	_, err := plugin.LoadLenient[Config](args)
	return err
}

// cmdStatus: loopback can always serve an ADD once its config is valid.
func cmdStatus(args *skel.CmdArgs) error {
	_, err := plugin.Load[Config](args)
	return err
}

// setLo sets lo up or down in the namespace and returns its addresses.
func setLo(target *nsutil.NS, up bool) ([]netlink.Addr, error) {
	h, err := target.Handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	link, err := h.LinkByName(lo)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", lo, target.Path(), err)
	}
	if up {
		err = h.LinkSetUp(link)
	} else {
		err = h.LinkSetDown(link)
	}
	if err != nil {
		return nil, fmt.Errorf("set %s up=%v in %s: %w", lo, up, target.Path(), err)
	}
	if !up {
		return nil, nil
	}
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list %s addresses: %w", lo, err)
	}
	return addrs, nil
}

// loResult reports lo and its addresses, with the sandbox set as runtimes
// and chained plugins expect.
func loResult(netns string, addrs []netlink.Addr) *current.Result {
	res := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: lo, Mac: "00:00:00:00:00:00", Sandbox: netns}},
	}
	for _, a := range addrs {
		res.IPs = append(res.IPs, &current.IPConfig{Interface: plugin.IfaceIndex(0), Address: *a.IPNet})
	}
	return res
}
