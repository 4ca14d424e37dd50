package hostport

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// Leftover is a forward of the network in the backend it does not add
// to: the attachment's own from before an ipMasqBackend switch, or a dead
// attachment's. It takes the traffic if it stays (whichever backend's rule
// runs first wins), so the caller removes it before adding.
type Leftover struct {
	Kind  string // its backend
	Owner string
	Entry Entry
}

// Conflict reports, as ErrPortTaken, a forward already on the host that
// clashes with one of s's (see Clash), other than those kind's own Add
// judges (the network's forwards in kind): other networks' in either
// backend, and the network's own in the other backend, which outlived a
// switch of ipMasqBackend — except those of s.Owner itself (the same
// attachment added again) and stale ones (s.Live), which it returns as
// leftovers to remove, as Add replaces them in its own backend. The
// caller holds the host ports lock (pkg/lock), so two networks' ADDs
// cannot both find a port free. Reading costs netlink, and iptables execs
// only for a family where some network has an iptables forward chain.
func Conflict(s Spec, kind string) ([]Leftover, error) {
	if len(s.Entries) == 0 {
		return nil, nil
	}
	var leftovers []Leftover
	seen := func(in string) func(Entry, string, string, bool) error {
		return func(old Entry, owner, where string, own bool) error {
			if !slices.ContainsFunc(s.Entries, func(e Entry) bool { return Clash(e, old) }) {
				return nil
			}
			if own && (owner == s.Owner || s.Live != nil && !s.Live(owner, old.Pod)) {
				leftovers = append(leftovers, Leftover{in, owner, old})
				return nil
			}
			return taken(old, owner, where)
		}
	}
	if err := nftConflict(s.Network, kind, s.Entries, seen(NFTables)); err != nil {
		return nil, err
	}
	if err := iptConflict(s, kind, seen(IPTables)); err != nil {
		return nil, err
	}
	return leftovers, nil
}

// Clash reports whether the host cannot have both forwards: the same
// protocol and host port for pods of one family, on host addresses that
// meet — both on one address, or either on every address (which of two
// networks' forwards would take the traffic then depends on the order of
// their chains; within one network the one of a given address is meant
// to win, and Add allows it).
func Clash(a, b Entry) bool {
	return a.Proto == b.Proto && a.HostPort == b.HostPort && a.Pod.Is4() == b.Pod.Is4() &&
		(!a.HostIP.IsValid() || !b.HostIP.IsValid() || a.HostIP == b.HostIP)
}

// nftConflict looks for the forwards of entries' host ports in the other
// tables by key, as a map lookup (the forward on the same address, and,
// for a forward of one address, that of every address), so its cost does
// not grow with the forwards on the node; only a forward of every address
// reads the tables' forwards of one address (few: hostIP is rare).
func nftConflict(network, kind string, entries []Entry, seen func(Entry, string, string, bool) error) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	own := tableOf(network).Name
	skip := ""
	if kind != IPTables {
		skip = own // Add judges these
	}
	tables, err := otherTables(conn, skip)
	if err != nil || len(tables) == 0 {
		return err
	}
	g, err := newGetter()
	if err != nil {
		return err
	}
	defer g.close()
	for _, t := range tables {
		where, mine := strings.TrimPrefix(t.Name, "netns-cni-"), t.Name == own
		look := func(e Entry) error {
			set, key, _ := elem(e)
			cur, found, err := g.get(t, set, key)
			if err != nil || !found {
				return err
			}
			old, _ := entryOf(set, key, cur.val)
			return seen(old, cur.owner, where, mine)
		}
		everyAddress := false
		for _, e := range entries {
			if err := look(e); err != nil {
				return err
			}
			if e.HostIP.IsValid() {
				e.HostIP = netip.Addr{}
				if err := look(e); err != nil {
					return err
				}
			} else {
				everyAddress = true
			}
		}
		if !everyAddress {
			continue
		}
		ss := sets(t)
		for _, f := range families {
			els, err := elements(conn, ss[f.hostIP()])
			if err != nil {
				return err
			}
			for _, el := range els {
				if old, ok := entryOf(f.hostIP(), el.Key, el.Val); ok {
					if err := seen(old, el.Comment, where, mine); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

func iptConflict(s Spec, kind string, seen func(Entry, string, string, bool) error) error {
	own := chainName("HP", s.Network)
	isForwards := func(table, chain string) bool {
		return table == "nat" && strings.HasPrefix(chain, "NETNS-CNI-HP-") && (chain != own || kind != IPTables)
	}
	for _, f := range iptFamilies {
		if !slices.ContainsFunc(s.Entries, func(e Entry) bool { return f.of(e.Pod) }) || iptview.Absent(f.proto, isForwards) {
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
			if !isForwards("nat", chain) {
				continue
			}
			rules, err := listRules(t, "nat", chain)
			if err != nil {
				return fmt.Errorf("%s: list %s: %w", f.cmd, chain, err)
			}
			for _, r := range rules {
				if old, ok := r.entry(); ok {
					if err := seen(old, r.owner(), "with iptables chain "+chain, chain == own); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
