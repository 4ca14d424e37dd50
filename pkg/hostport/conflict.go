package hostport

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// Conflict reports, as ErrPortTaken, the first of entries whose host port
// another network forwards already, in either backend: network adds them
// with backend kind, whose own Add judges the network's own forwards (a
// stale one is taken over there). The forwards of the network in the
// other backend count as another's: they outlived a switch of
// ipMasqBackend and still lead to a pod. The caller holds the host ports
// lock (pkg/lock), so two networks' ADDs cannot both find a port free.
// Reading costs netlink, and an iptables exec only for a family where
// another network has an iptables forward chain.
func Conflict(network, kind string, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	if err := nftConflict(network, kind, entries); err != nil {
		return err
	}
	return iptConflict(network, kind, entries)
}

func nftConflict(network, kind string, entries []Entry) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	self := ""
	if kind != IPTables {
		self = tableOf(network).Name
	}
	others, err := otherTables(conn, self)
	if err != nil || len(others) == 0 {
		return err
	}
	g, err := newGetter()
	if err != nil {
		return err
	}
	defer g.close()
	for _, e := range entries {
		set, key, _ := elem(e)
		for _, o := range others {
			if cur, found, err := g.get(o, set, key); err != nil {
				return err
			} else if found {
				old, _ := entryOf(set, key, cur.val)
				return taken(old, cur.owner, strings.TrimPrefix(o.Name, "netns-cni-"))
			}
		}
	}
	return nil
}

func iptConflict(network, kind string, entries []Entry) error {
	self := ""
	if kind == IPTables {
		self = chainName("HP", network)
	}
	isOther := func(table, chain string) bool {
		return table == "nat" && strings.HasPrefix(chain, "NETNS-CNI-HP-") && chain != self
	}
	for _, f := range iptFamilies {
		mine := slices.DeleteFunc(slices.Clone(entries), func(e Entry) bool { return !f.of(e.Pod) })
		if len(mine) == 0 || iptview.Absent(f.proto, isOther) {
			continue
		}
		t, err := f.open()
		if err != nil {
			return err
		}
		chains, err := t.ListChains("nat")
		if err != nil {
			return fmt.Errorf("%s: list nat chains: %w", f.cmd, err)
		}
		for _, chain := range chains {
			if !isOther("nat", chain) {
				continue
			}
			rules, err := listRules(t, "nat", chain)
			if err != nil {
				return fmt.Errorf("%s: list %s: %w", f.cmd, chain, err)
			}
			for _, r := range rules {
				old, ok := r.entry()
				if ok && slices.ContainsFunc(mine, func(e Entry) bool { return slot(e) == slot(old) }) {
					return taken(old, r.owner(), "with iptables chain "+chain)
				}
			}
		}
	}
	return nil
}
