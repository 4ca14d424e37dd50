package hostport

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/iptview"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// iptBackend keeps a network's forwards in chains of its own, a rule per
// forward, for hosts where ipMasqBackend is "iptables":
//
//	nat    PREROUTING, OUTPUT: -m addrtype --dst-type LOCAL -j NETNS-CNI-HP-<hash>
//	nat    NETNS-CNI-HP-<hash>: [-d hostIP] -p tcp -m tcp --dport 8080 -m comment --comment <owner> -j DNAT --to-destination 10.66.0.5:80
//	nat    POSTROUTING: -m conntrack --ctstate DNAT -j NETNS-CNI-HM-<hash>
//	nat    NETNS-CNI-HM-<hash>: -s 10.66.0.5 -d 10.66.0.5 --comment <owner> -j MASQUERADE  (hairpin)
//	                            -s 127.0.0.0/8 -d 10.66.0.5 --comment <owner> -j MASQUERADE (from the host's loopback)
//	filter INPUT: -j NETNS-CNI-HL-<hash>
//	filter NETNS-CNI-HL-<hash>: -i <link> -d 127.0.0.0/8 -m conntrack ! --ctstate DNAT -j DROP
//
// Rules with a host address go first, as in the nftables backend. Every
// call execs iptables (go-iptables' way), so this backend costs an ADD
// tens of milliseconds more than nftables; it is there for hosts that
// cannot use nftables.
type iptBackend struct{}

// Chains of a network: forwards (nat), masquerade (nat), loopback guard (filter).
// IPTablesChains are the names of the iptables chains a network's port
// mappings use (nat HP and HM, filter HL), for an operator's inspection.
func IPTablesChains(network string) []string {
	return []string{chainName("HP", network), chainName("HM", network), chainName("HL", network)}
}

func chainName(kind, network string) string {
	sum := sha256.Sum256([]byte(network))
	return "NETNS-CNI-" + kind + "-" + strings.ToUpper(hex.EncodeToString(sum[:]))[:15]
}

type iptFamily struct {
	proto iptables.Protocol
	cmd   string
	nft   nftables.TableFamily
}

var iptFamilies = []iptFamily{
	{iptables.ProtocolIPv4, "iptables", nftables.TableFamilyIPv4},
	{iptables.ProtocolIPv6, "ip6tables", nftables.TableFamilyIPv6},
}

func (f iptFamily) of(a netip.Addr) bool { return a.Is4() == (f.proto == iptables.ProtocolIPv4) }

func (f iptFamily) open() (*iptables.IPTables, error) { return iptview.Open(f.proto) }

// hostPrefix is a as a single-address prefix, the way iptables lists it.
func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func comment(c string) []string { return []string{"-m", "comment", "--comment", c} }

// dnatRule is an entry's rule in the HP chain.
func dnatRule(e Entry, owner string) []string {
	var r []string
	if e.HostIP.IsValid() {
		r = append(r, "-d", hostPrefix(e.HostIP))
	}
	p := ProtoName(e.Proto)
	r = append(r, "-p", p, "-m", p, "--dport", strconv.Itoa(int(e.HostPort)))
	r = append(r, comment(owner)...)
	return append(r, "-j", "DNAT", "--to-destination", netip.AddrPortFrom(e.Pod, e.ContainerPort).String())
}

// masqRules are the HM rules of a mapped address.
func masqRules(pod netip.Addr, owner string) [][]string {
	dnat := []string{"-m", "conntrack", "--ctstate", "DNAT"}
	rules := [][]string{slices.Concat([]string{"-s", hostPrefix(pod), "-d", hostPrefix(pod)}, dnat, comment(owner), []string{"-j", "MASQUERADE"})}
	if pod.Is4() {
		rules = append(rules, slices.Concat([]string{"-s", "127.0.0.0/8", "-d", hostPrefix(pod)}, dnat, comment(owner), []string{"-j", "MASQUERADE"}))
	}
	return rules
}

func guardRule(ifname, owner string) []string {
	return slices.Concat([]string{"-i", ifname, "-d", "127.0.0.0/8", "-m", "conntrack", "!", "--ctstate", "DNAT"}, comment(owner), []string{"-j", "DROP"})
}

// jump is a rule in a built-in chain leading to a chain of the network.
type jump struct {
	table, chain string
	rule         []string
}

// jumps are a network's jumps in family f.
func jumps(f iptFamily, network string) []jump {
	c := comment("netns-cni:" + network)
	hp, hm, hl := chainName("HP", network), chainName("HM", network), chainName("HL", network)
	local := slices.Concat([]string{"-m", "addrtype", "--dst-type", "LOCAL"}, c, []string{"-j", hp})
	out := []jump{
		{"nat", "PREROUTING", local},
		{"nat", "OUTPUT", local},
		{"nat", "POSTROUTING", slices.Concat([]string{"-m", "conntrack", "--ctstate", "DNAT"}, c, []string{"-j", hm})},
	}
	if f.proto == iptables.ProtocolIPv4 {
		out = append(out, jump{"filter", "INPUT", slices.Concat(c, []string{"-j", hl})})
	}
	return out
}

// ruleLine is a listed rule: its words after "-A CHAIN", unquoted.
type ruleLine []string

func listRules(t *iptables.IPTables, table, chain string) ([]ruleLine, error) {
	lines, err := t.List(table, chain)
	if err != nil {
		var e *iptables.Error
		if errors.As(err, &e) && (e.IsNotExist() || e.ExitStatus() == 1) {
			return nil, nil // no chain: iptables-nft says "incompatible" or "does not exist"
		}
		return nil, err
	}
	var out []ruleLine
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-A" {
			continue
		}
		for i := range f {
			f[i] = strings.Trim(f[i], `"`)
		}
		out = append(out, f[2:])
	}
	return out, nil
}

func (r ruleLine) value(flag string) string {
	i := slices.Index(r, flag)
	if i < 0 || i+1 >= len(r) {
		return ""
	}
	return r[i+1]
}

func (r ruleLine) owner() string { return r.value("--comment") }

// entry decodes an HP rule.
func (r ruleLine) entry() (Entry, bool) {
	var e Entry
	proto, ok := protocols[r.value("-p")]
	port, err := strconv.Atoi(r.value("--dport"))
	to, err2 := netip.ParseAddrPort(r.value("--to-destination"))
	if !ok || err != nil || err2 != nil {
		return e, false
	}
	e.Proto, e.HostPort, e.Pod, e.ContainerPort = proto, uint16(port), to.Addr(), to.Port()
	if d := r.value("-d"); d != "" {
		p, err := netip.ParsePrefix(d)
		if err != nil {
			return e, false
		}
		e.HostIP = p.Addr()
	}
	return e, true
}

// slot is what two forwards must not share: all but the target.
func slot(e Entry) Entry { e.Pod, e.ContainerPort = netip.Addr{}, 0; return e }

func (b iptBackend) Add(s Spec) error {
	for _, f := range iptFamilies {
		var mine []Entry
		for _, e := range s.Entries {
			if f.of(e.Pod) {
				mine = append(mine, e)
			}
		}
		if len(mine) == 0 {
			continue
		}
		if err := b.add(f, s, mine); err != nil {
			return err
		}
	}
	if s.HostIf != "" && slices.ContainsFunc(s.Entries, func(e Entry) bool { return e.Pod.Is4() }) {
		return netconf.SetRouteLocalnet(s.HostIf, true)
	}
	return nil
}

func (b iptBackend) add(f iptFamily, s Spec, entries []Entry) error {
	hp, hm, hl := chainName("HP", s.Network), chainName("HM", s.Network), chainName("HL", s.Network)
	if absent(f, chainTables(f, s.Network)) && firstAdd(f, s, entries) == nil {
		return nil
	}
	if done, err := laterAdd(f, s, entries); done {
		return err
	}
	// Rule by rule, which names what is wrong (and makes what is missing).
	t, err := f.open()
	if err != nil {
		return err
	}
	for _, c := range [][2]string{{"nat", hp}, {"nat", hm}, {"filter", hl}} {
		if c[1] == hl && f.proto != iptables.ProtocolIPv4 {
			continue
		}
		if ok, err := t.ChainExists(c[0], c[1]); err != nil {
			return fmt.Errorf("%s: %w", f.cmd, err)
		} else if !ok {
			if err := t.NewChain(c[0], c[1]); err != nil {
				return fmt.Errorf("%s: create chain %s: %w", f.cmd, c[1], err)
			}
		}
	}
	for _, j := range jumps(f, s.Network) {
		if err := t.InsertUnique(j.table, j.chain, 1, j.rule...); err != nil {
			return fmt.Errorf("%s: add jump from %s: %w", f.cmd, j.chain, err)
		}
	}
	have, err := listRules(t, "nat", hp)
	if err != nil {
		return fmt.Errorf("%s: list %s: %w", f.cmd, hp, err)
	}
	for _, e := range entries {
		in, stale, err := against(e, have, s)
		if err != nil {
			return err
		}
		for _, r := range stale {
			if err := t.Delete("nat", hp, r...); err != nil {
				old, _ := r.entry()
				return fmt.Errorf("%s: delete stale forward %s: %w", f.cmd, old, err)
			}
		}
		if in {
			continue
		}
		add := t.Append
		if e.HostIP.IsValid() {
			add = func(table, chain string, spec ...string) error { return t.Insert(table, chain, 1, spec...) }
		}
		if err := add("nat", hp, dnatRule(e, s.Owner)...); err != nil {
			return fmt.Errorf("%s: add forward %s: %w", f.cmd, e, err)
		}
	}
	for _, pod := range Pods(entries) {
		for _, r := range masqRules(pod, s.Owner) {
			if err := t.AppendUnique("nat", hm, r...); err != nil {
				return fmt.Errorf("%s: add hairpin masquerade of %s: %w", f.cmd, pod, err)
			}
		}
	}
	if s.HostIf != "" && f.proto == iptables.ProtocolIPv4 {
		if err := t.AppendUnique("filter", hl, guardRule(s.HostIf, s.guardOwner())...); err != nil {
			return fmt.Errorf("%s: add loopback guard of %s: %w", f.cmd, s.HostIf, err)
		}
	}
	return nil
}

// firstAdd writes what add does for a network with none of its chains in
// family f — the chains, the jumps to them, the forwards of entries, their
// hairpin masquerade and the loopback guard — in one iptables-restore: one
// exec instead of one or two per rule. add writes them rule by rule when
// it fails.
func firstAdd(f iptFamily, s Spec, entries []Entry) error {
	hp, hm, hl := chainName("HP", s.Network), chainName("HM", s.Network), chainName("HL", s.Network)
	var b iptview.Batch
	b.Add("nat", ":"+hp, "-", "[0:0]")
	b.Add("nat", ":"+hm, "-", "[0:0]")
	if f.proto == iptables.ProtocolIPv4 { // the loopback guard is IPv4's
		b.Add("filter", ":"+hl, "-", "[0:0]")
	}
	for _, j := range jumps(f, s.Network) {
		b.Add(j.table, slices.Concat([]string{"-I", j.chain, "1"}, j.rule)...)
	}
	if err := addMissing(&b, f, s, entries, nil); err != nil {
		return err
	}
	return b.Restore(f.proto)
}

// laterAdd is add for a network whose chains and jumps are in place —
// its second and later attachments: the three chains listed, what is
// missing (and the entries' stale forwards' removal) written in one
// iptables-restore. Four execs a family, where rule by rule took about
// fifteen. done is false when add must go rule by rule: a jump not seen
// over netlink (iptables-legacy, or one missing), a chain missing, or a
// restore that failed; a forward another attachment holds is an error
// (done).
func laterAdd(f iptFamily, s Spec, entries []Entry) (done bool, err error) {
	for _, j := range jumps(f, s.Network) {
		if !iptview.Jumps(f.proto, j.table, j.chain, j.rule[len(j.rule)-1]) {
			return false, nil
		}
	}
	t, chains, err := chainsOf(f, s.Network)
	if err != nil || t == nil {
		return false, nil
	}
	var b iptview.Batch
	if err := addMissing(&b, f, s, entries, chains); err != nil {
		return true, err
	}
	return b.Restore(f.proto) == nil, nil // an empty batch execs nothing
}

// addMissing adds to b what entries need in the network's chains of
// family f that chains (their rules as listed; nil for chains just made)
// lack: the removal of stale forwards of their slots, the forwards, their
// hairpin masquerade and the loopback guard. A slot a live attachment
// holds is an ErrPortTaken error.
func addMissing(b *iptview.Batch, f iptFamily, s Spec, entries []Entry, chains map[string][]ruleLine) error {
	hp, hm, hl := chainName("HP", s.Network), chainName("HM", s.Network), chainName("HL", s.Network)
	for _, e := range entries {
		in, stale, err := against(e, chains[hp], s)
		if err != nil {
			return err
		}
		for _, r := range stale {
			b.Add("nat", slices.Concat([]string{"-D", hp}, r)...)
		}
		if !in {
			at := []string{"-A", hp} // as add: a forward of one host address goes before those of every address
			if e.HostIP.IsValid() {
				at = []string{"-I", hp, "1"}
			}
			b.Add("nat", slices.Concat(at, dnatRule(e, s.Owner))...)
		}
	}
	for _, pod := range Pods(entries) {
		for _, r := range masqRules(pod, s.Owner) {
			if !slices.ContainsFunc(chains[hm], func(l ruleLine) bool {
				return l.owner() == s.Owner && l.value("-s") == r[1] && l.value("-d") == r[3]
			}) {
				b.Add("nat", slices.Concat([]string{"-A", hm}, r)...)
			}
		}
	}
	if s.HostIf != "" && f.proto == iptables.ProtocolIPv4 {
		owner := s.guardOwner()
		if !slices.ContainsFunc(chains[hl], func(l ruleLine) bool { return l.owner() == owner && l.value("-i") == s.HostIf }) {
			b.Add("filter", slices.Concat([]string{"-A", hl}, guardRule(s.HostIf, owner))...)
		}
	}
	return nil
}

// against compares the forward e of attachment s.Owner with the forwards
// have of its slot (host address, protocol, port): in when it is there
// already, stale the rules of the slot that go (this attachment's with
// another target, or of an attachment s.Live says is gone), and an
// ErrPortTaken error when a live attachment holds the slot.
func against(e Entry, have []ruleLine, s Spec) (in bool, stale []ruleLine, err error) {
	for _, r := range have {
		old, ok := r.entry()
		if !ok || slot(old) != slot(e) {
			continue
		}
		if old == e && r.owner() == s.Owner {
			in = true
			continue
		}
		if r.owner() != s.Owner && (s.Live == nil || s.Live(r.owner(), old.Pod)) {
			return false, nil, taken(old, r.owner(), s.Network)
		}
		stale = append(stale, r)
	}
	return in, stale, nil
}

// chainTables are the network's chains in family f, each with its
// table: the forwards' and the hairpin masquerade's (nat), and in IPv4
// the loopback guard's (filter).
func chainTables(f iptFamily, network string) map[string]string {
	names := map[string]string{chainName("HP", network): "nat", chainName("HM", network): "nat"}
	if f.proto == iptables.ProtocolIPv4 {
		names[chainName("HL", network)] = "filter"
	}
	return names
}

// chainsOf lists the network's rules in each of its chains of family f:
// nil for chains that do not exist. Read over netlink first where
// iptables-nft keeps them, so a network without forwards costs no exec.
func chainsOf(f iptFamily, network string) (*iptables.IPTables, map[string][]ruleLine, error) {
	names := chainTables(f, network)
	if absent(f, names) {
		return nil, nil, nil
	}
	if iptview.Binary(f.proto) == "" {
		return nil, nil, nil // no iptables, no rules of it
	}
	t, err := f.open()
	if err != nil {
		return nil, nil, err
	}
	out := map[string][]ruleLine{}
	for chain, table := range names {
		rules, err := listRules(t, table, chain)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: list %s: %w", f.cmd, chain, err)
		}
		out[chain] = rules
	}
	return t, out, nil
}

// absent reports whether, certainly, none of the chains is there
// (pkg/iptview: read over netlink, no exec).
func absent(f iptFamily, names map[string]string) bool {
	return iptview.Lacks(f.nft, func(table, chain string) bool { return names[chain] == table })
}

// removeWhere deletes the rules of the network's chains that drop says
// go, and returns the forwards among them: in one iptables-restore per
// family, or rule by rule when that fails (a rule gone meanwhile).
func (b iptBackend) removeWhere(network string, drop func(owner string) bool) ([]Entry, error) {
	var removed []Entry
	var errs []error
	for _, f := range iptFamilies {
		t, chains, err := chainsOf(f, network)
		if err != nil || t == nil {
			errs = append(errs, err)
			continue
		}
		type del struct {
			table, chain string
			rule         ruleLine
		}
		var dels []del
		for chain, rules := range chains {
			table := "nat"
			if chain == chainName("HL", network) {
				table = "filter"
			}
			for _, r := range rules {
				if drop(r.owner()) {
					dels = append(dels, del{table, chain, r})
				}
			}
		}
		if len(dels) == 0 {
			continue
		}
		var batch iptview.Batch
		for _, d := range dels {
			batch.Add(d.table, slices.Concat([]string{"-D", d.chain}, d.rule)...)
		}
		batched := batch.Restore(f.proto) == nil
		for _, d := range dels {
			if !batched {
				if err := t.Delete(d.table, d.chain, d.rule...); err != nil {
					errs = append(errs, fmt.Errorf("%s: delete from %s: %w", f.cmd, d.chain, err))
					continue
				}
			}
			if e, ok := d.rule.entry(); ok && d.chain == chainName("HP", network) {
				removed = append(removed, e)
			}
		}
	}
	return removed, errors.Join(errs...)
}

func (b iptBackend) Remove(s Spec, _ []netip.Addr) ([]Entry, error) {
	return b.removeWhere(s.Network, func(owner string) bool { return owner == s.Owner })
}

func (b iptBackend) Collect(network string, keep func(owner string) bool) ([]Entry, error) {
	return b.removeWhere(network, func(owner string) bool { return owner != sharedOwner && !keep(owner) })
}

func (b iptBackend) Check(s Spec) error {
	for _, f := range iptFamilies {
		t, chains, err := chainsOf(f, s.Network)
		if err != nil {
			return err
		}
		// The jumps into the chains, where the family has them: a firewall
		// reload that flushed PREROUTING leaves the forwards in place and
		// unreached.
		if t != nil && len(chains[chainName("HP", s.Network)]) > 0 {
			for _, j := range jumps(f, s.Network) {
				if ok, err := t.Exists(j.table, j.chain, j.rule...); err != nil {
					return fmt.Errorf("%s: %w", f.cmd, err)
				} else if !ok {
					return fmt.Errorf("%s %s chain %s lacks the jump to %s", f.cmd, j.table, j.chain, j.rule[len(j.rule)-1])
				}
			}
		}
		for _, e := range s.Entries {
			if !f.of(e.Pod) {
				continue
			}
			if !slices.ContainsFunc(chains[chainName("HP", s.Network)], func(r ruleLine) bool {
				got, ok := r.entry()
				return ok && got == e && r.owner() == s.Owner
			}) {
				return fmt.Errorf("%s nat chain %s lacks the forward %s of attachment %s", f.cmd, chainName("HP", s.Network), e, s.Owner)
			}
		}
	}
	return checkLocalnet(s)
}

func (b iptBackend) List(network string) (map[string][]Entry, error) {
	out := map[string][]Entry{}
	for _, f := range iptFamilies {
		_, chains, err := chainsOf(f, network)
		if err != nil {
			return nil, err
		}
		for _, r := range chains[chainName("HP", network)] {
			if e, ok := r.entry(); ok {
				out[r.owner()] = append(out[r.owner()], e)
			}
		}
	}
	return out, nil
}

func (b iptBackend) Drop(network string) error {
	var errs []error
	for _, f := range iptFamilies {
		hl := chainName("HL", network)
		if iptview.Binary(f.proto) == "" || absent(f, chainTables(f, network)) {
			continue
		}
		t, err := f.open()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if f.proto == iptables.ProtocolIPv4 { // the loopback guard is IPv4's
			guards, err := listRules(t, "filter", hl)
			errs = append(errs, err)
			for _, r := range guards {
				errs = append(errs, releaseLocalnet(r.value("-i"), network))
			}
		}
		// The jumps and the chains in one exec; one by one below when that
		// fails (a jump or a chain already gone).
		if dropBatch(f, network).Restore(f.proto) == nil {
			continue
		}
		_, chains, err := chainsOf(f, network)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, j := range jumps(f, network) {
			if err := iptview.DeleteAll(t, j.table, j.chain, j.rule...); err != nil {
				errs = append(errs, fmt.Errorf("%s: delete jump from %s: %w", f.cmd, j.chain, err))
			}
		}
		for chain, rules := range chains {
			table := "nat"
			if chain == chainName("HL", network) {
				table = "filter"
			}
			if rules == nil {
				if ok, _ := t.ChainExists(table, chain); !ok {
					continue
				}
			}
			if err := t.ClearAndDeleteChain(table, chain); err != nil {
				errs = append(errs, fmt.Errorf("%s: delete chain %s: %w", f.cmd, chain, err))
			}
		}
	}
	return errors.Join(errs...)
}

// dropBatch is Drop's batch for family f: the jumps, then the chains.
func dropBatch(f iptFamily, network string) *iptview.Batch {
	b := &iptview.Batch{}
	for _, j := range jumps(f, network) {
		b.Add(j.table, slices.Concat([]string{"-D", j.chain}, j.rule)...)
	}
	for _, c := range []struct{ table, chain string }{{"nat", chainName("HP", network)}, {"nat", chainName("HM", network)}, {"filter", chainName("HL", network)}} {
		if c.table == "filter" && f.proto != iptables.ProtocolIPv4 {
			continue // the loopback guard is IPv4's
		}
		b.Add(c.table, "-F", c.chain)
		b.Add(c.table, "-X", c.chain)
	}
	return b
}
