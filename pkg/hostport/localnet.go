package hostport

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/iptview"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// route_localnet on a pod's host interface lets the host's connections to
// 127.0.0.1:hostPort reach the pod; each network that sets it also drops,
// by its loopback guard, what else 127/8 traffic the pods could then send
// (the reference portmap's v1.9.0 fix). Two networks on one bridge share
// the bridge's setting.

// releaseLocalnet turns route_localnet off on ifname as network's last
// forward goes — unless another network's guard (an element of its
// nftables localnet set, a rule of its iptables loopback chain) still
// names ifname: the last DEL of one network on a shared bridge cut the
// other's live pods off from the host's 127.0.0.1 forwards. A guard that
// cannot be read counts as absent: a switch left on without its guard is
// the weaker side.
func releaseLocalnet(ifname, network string) error {
	if localnetGuarded(ifname, network) {
		return nil
	}
	return netconf.SetRouteLocalnet(ifname, false)
}

// localnetGuarded reports whether a network other than network has a
// loopback guard on ifname.
func localnetGuarded(ifname, network string) bool {
	if conn, err := nftables.New(); err == nil {
		if ts, err := otherTables(conn, tableOf(network).Name); err == nil {
			for _, t := range ts {
				els, _ := elements(conn, sets(t)[setLocal])
				if slices.ContainsFunc(els, func(el nftables.SetElement) bool {
					return string(bytes.TrimRight(el.Key, "\x00")) == ifname
				}) {
					return true
				}
			}
		}
	}
	own := chainName("HL", network)
	isGuard := func(table, chain string) bool {
		return table == "filter" && strings.HasPrefix(chain, "NETNS-CNI-HL-") && chain != own
	}
	f := iptFamilies[0] // the guard is IPv4's
	if iptview.Absent(f.proto, isGuard) {
		return false
	}
	t, err := f.open()
	if err != nil {
		return false
	}
	chains, err := t.ListChains("filter")
	if err != nil {
		return false
	}
	for _, chain := range chains {
		if !isGuard("filter", chain) {
			continue
		}
		rules, _ := listRules(t, "filter", chain)
		if slices.ContainsFunc(rules, func(r ruleLine) bool { return r.value("-i") == ifname }) {
			return true
		}
	}
	return false
}

// checkLocalnet is CHECK's part: route_localnet is on where Add turned it
// on (an IPv4 forward through a host interface).
func checkLocalnet(s Spec) error {
	if s.HostIf == "" || !slices.ContainsFunc(s.Entries, func(e Entry) bool { return e.Pod.Is4() }) {
		return nil
	}
	on, err := netconf.RouteLocalnet(s.HostIf)
	if err != nil || on {
		return err
	}
	return fmt.Errorf("route_localnet is off on %s: the host's connections to 127.0.0.1 on the mapped ports do not reach the pod", s.HostIf)
}
