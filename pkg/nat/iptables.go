package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// iptBackend keeps each network's rules in a chain of its own in the nat
// table, NETNS-CNI-<hash>, reached by one jump per subnet from
// POSTROUTING: RETURN for the network's subnets and multicast, then
// MASQUERADE. Every call execs iptables (that is go-iptables' way), so
// Ensure does the least it can: one list of the chain and one check per
// jump when all is in place.
type iptBackend struct{}

// ChainName is the iptables chain of a network.
func ChainName(network string) string { return "NETNS-CNI-" + strings.ToUpper(shortHash(network)) }

var families = []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6}

func ipt(p iptables.Protocol) (*iptables.IPTables, error) { return iptview.Open(p) }

// iptSpecs are the rules of one family: the jumps and the chain body.
func iptSpecs(network string, rules []Rule) (jumps, body [][]string) {
	c := comment(network)
	chain := ChainName(network)
	var except []netip.Prefix
	for _, r := range rules {
		jumps = append(jumps, []string{"-s", r.Subnet.String(), "-m", "comment", "--comment", c, "-j", chain})
		body = append(body, []string{"-d", r.Subnet.String(), "-m", "comment", "--comment", c, "-j", "RETURN"})
		except = append(except, r.NoMasq...)
	}
	for _, n := range sortedUnique(except) {
		body = append(body, []string{"-d", n.String(), "-m", "comment", "--comment", c, "-j", "RETURN"})
	}
	if len(rules) > 0 {
		body = append(body,
			[]string{"-d", rules[0].Multicast().String(), "-m", "comment", "--comment", c, "-j", "RETURN"},
			[]string{"-m", "comment", "--comment", c, "-j", "MASQUERADE"})
	}
	return jumps, body
}

func byFamily(s Spec) map[iptables.Protocol][]Rule {
	m := map[iptables.Protocol][]Rule{}
	for _, r := range Plan(s) {
		p := iptables.ProtocolIPv6
		if r.Subnet.Addr().Is4() {
			p = iptables.ProtocolIPv4
		}
		m[p] = append(m[p], r)
	}
	return m
}

// sig reduces a rule to what identifies it here: its destination (with
// a "!" that negates it: "! -d X -j RETURN" exempts everything but X) and
// target.
func sig(spec []string) string {
	var d, j string
	for i := 0; i+1 < len(spec); i++ {
		switch spec[i] {
		case "-d":
			d = spec[i+1]
			if i > 0 && spec[i-1] == "!" {
				d = "!" + d
			}
		case "-j":
			j = spec[i+1]
		}
	}
	return d + " " + j
}

// inPlace compares the chain with body: the same RETURN rules, in any
// order (each only exempts a destination), and MASQUERADE last. When the
// chain lacks some of body's RETURN rules and has nothing body does not,
// missing lists them: they go in at the top, with no rewrite (a rewrite
// empties the chain for a moment, and flows that start then leave
// unmasqueraded for good).
func inPlace(t *iptables.IPTables, network string, body [][]string) (ok bool, missing [][]string, err error) {
	lines, err := t.List("nat", ChainName(network))
	if err != nil {
		// A missing chain: iptables-nft 1.8.9 says "incompatible" rather
		// than "No chain/target/match by that name", so any exit status 1
		// counts as "not in place" and leads to a rewrite.
		var e *iptables.Error
		if errors.As(err, &e) && (e.IsNotExist() || e.ExitStatus() == 1) {
			return false, nil, nil
		}
		return false, nil, err
	}
	var have []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "-A" {
			have = append(have, sig(f[2:]))
		}
	}
	if len(have) == 0 || len(body) == 0 || have[len(have)-1] != sig(body[len(body)-1]) {
		return false, nil, nil // empty, or not masquerading last: rewrite
	}
	returns := map[string]bool{}
	for _, b := range body[:len(body)-1] {
		returns[sig(b)] = true
	}
	for _, h := range have[:len(have)-1] {
		if !returns[h] {
			return false, nil, nil // a rule body does not have: rewrite
		}
	}
	for _, b := range body[:len(body)-1] {
		if !slices.Contains(have, sig(b)) {
			missing = append(missing, b)
		}
	}
	return len(missing) == 0, missing, nil
}

// planned is the chain's rules and jumps for rules of one family, whether
// the chain holds them, and the RETURN rules it lacks (inPlace), with the
// rules of every subnet with a jump from POSTROUTING: jumps are only added
// while the network lives, so they name the subnets of earlier configs,
// whose pods may still run after an operator changed the network's
// subnet; their traffic to each other must stay unmasqueraded. (Read every time, not only when the
// chain differs from today's config: a chain an older version rewrote for
// the new subnet alone matches today's config and lacks the old one's.)
func planned(t *iptables.IPTables, network string, rules []Rule) (jumps, body [][]string, ok bool, missing [][]string, err error) {
	lines, err := t.List("nat", "POSTROUTING")
	if err != nil {
		return nil, nil, false, nil, fmt.Errorf("list POSTROUTING: %w", err)
	}
	all := slices.Clone(rules)
	for _, l := range lines {
		if subnet, ok := jumpSubnet(l, ChainName(network)); ok && !slices.ContainsFunc(all, func(r Rule) bool { return r.Subnet == subnet }) {
			all = append(all, Rule{Network: network, Subnet: subnet})
		}
	}
	jumps, body = iptSpecs(network, all)
	ok, missing, err = inPlace(t, network, body)
	return jumps, body, ok, missing, err
}

// jumpSubnet is the source subnet of a listed POSTROUTING rule that jumps
// to chain.
func jumpSubnet(line, chain string) (netip.Prefix, bool) {
	f := strings.Fields(line)
	i := slices.Index(f, "-s")
	if len(f) < 2 || f[0] != "-A" || !slices.Contains(f, chain) || i < 0 || i+1 >= len(f) {
		return netip.Prefix{}, false
	}
	subnet, err := netip.ParsePrefix(f[i+1])
	return subnet, err == nil
}

func (b *iptBackend) Ensure(s Spec) error {
	network := s.Network
	for p, rules := range byFamily(s) {
		if absent(p, network) && firstWrite(p, network, rules) == nil {
			continue
		}
		t, err := ipt(p)
		if err != nil {
			return err
		}
		jumps, body, ok, missing, err := planned(t, network, rules)
		if err != nil {
			return fmt.Errorf("list chain %s: %w", ChainName(network), err)
		}
		for _, spec := range missing { // a new subnet's exemption
			if err := t.Insert("nat", ChainName(network), 1, spec...); err != nil {
				return fmt.Errorf("add rule to %s: %w", ChainName(network), err)
			}
		}
		if !ok && missing == nil && rewrite(p, network, body) != nil {
			// The chain altered (emptied, a rule the network no longer has
			// such as a nonMasqueradeCIDR taken out, MASQUERADE not last):
			// written whole in one exec above (rewrite), or, when that
			// fails, rule by rule here. ClearChain creates or empties it.
			if err := t.ClearChain("nat", ChainName(network)); err != nil {
				return fmt.Errorf("create chain %s: %w", ChainName(network), err)
			}
			for _, spec := range body {
				if err := t.Append("nat", ChainName(network), spec...); err != nil {
					return fmt.Errorf("add rule to %s: %w", ChainName(network), err)
				}
			}
		}
		for _, spec := range jumps {
			if err := t.AppendUnique("nat", "POSTROUTING", spec...); err != nil {
				return fmt.Errorf("add jump to %s: %w", ChainName(network), err)
			}
		}
	}
	return nil
}

// absent reports whether, certainly, the network has no chain in family
// p (read over netlink, no exec; see iptview).
func absent(p iptables.Protocol, network string) bool {
	chain := ChainName(network)
	return iptview.Absent(p, func(table, c string) bool { return table == "nat" && c == chain })
}

// firstWrite makes the chain of a network that has none, and the jumps to
// it, in one iptables-restore (one exec instead of one per rule; all or
// nothing). Ensure writes them rule by rule when it fails.
func firstWrite(p iptables.Protocol, network string, rules []Rule) error {
	jumps, body := iptSpecs(network, rules)
	b := chainBatch(network, body)
	for _, spec := range jumps {
		b.Add("nat", append([]string{"-A", "POSTROUTING"}, spec...)...)
	}
	return b.Restore(p)
}

// rewrite writes the network's chain whole, as body, in one
// iptables-restore: declaring the chain empties it in the same
// transaction, so live pods' traffic never meets it half written (rule by
// rule, a plugin killed between the flush and the MASQUERADE rule left
// them unmasqueraded until the next ADD).
func rewrite(p iptables.Protocol, network string, body [][]string) error {
	return chainBatch(network, body).Restore(p)
}

// chainBatch declares the network's chain (which empties it if it
// exists) and writes body into it.
func chainBatch(network string, body [][]string) *iptview.Batch {
	chain := ChainName(network)
	b := &iptview.Batch{}
	b.Add("nat", ":"+chain, "-", "[0:0]")
	for _, spec := range body {
		b.Add("nat", append([]string{"-A", chain}, spec...)...)
	}
	return b
}

func (b *iptBackend) Remove(network string) error {
	var errs []error
	for _, p := range families {
		chain := ChainName(network)
		if absent(p, network) {
			continue // no chain, so no jump to it: nothing to exec iptables for
		}
		t, err := ipt(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		lines, err := t.List("nat", "POSTROUTING")
		if err != nil {
			errs = append(errs, fmt.Errorf("list POSTROUTING: %w", err))
			continue
		}
		// The jumps and the chain in one exec; rule by rule below when that
		// fails (a jump gone meanwhile).
		var batch iptview.Batch
		for _, l := range lines {
			if subnet, ok := jumpSubnet(l, chain); ok {
				jumps, _ := iptSpecs(network, []Rule{{Network: network, Subnet: subnet}})
				batch.Add("nat", append([]string{"-D", "POSTROUTING"}, jumps[0]...)...)
			}
		}
		batch.Add("nat", "-F", chain)
		batch.Add("nat", "-X", chain)
		if batch.Restore(p) == nil {
			continue
		}
		for _, l := range lines {
			// Rebuild the jump from its source subnet rather than reuse the
			// listed words: iptables quotes the comment when it lists it.
			subnet, ok := jumpSubnet(l, chain)
			if !ok {
				continue
			}
			jumps, _ := iptSpecs(network, []Rule{{Network: network, Subnet: subnet}})
			if err := iptview.DeleteAll(t, "nat", "POSTROUTING", jumps[0]...); err != nil {
				errs = append(errs, fmt.Errorf("delete jump to %s: %w", chain, err))
			}
		}
		if err := t.ClearAndDeleteChain("nat", chain); err != nil {
			errs = append(errs, fmt.Errorf("delete chain %s: %w", chain, err))
		}
	}
	return errors.Join(errs...)
}

func (b *iptBackend) Check(s Spec) error {
	network := s.Network
	for p, rules := range byFamily(s) {
		t, err := ipt(p)
		if err != nil {
			return err
		}
		jumps, _, ok, _, err := planned(t, network, rules)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s chain %s is missing or altered", iptview.Cmd(p), ChainName(network))
		}
		for _, spec := range jumps {
			ok, err := t.Exists("nat", "POSTROUTING", spec...)
			if err != nil {
				return fmt.Errorf("%s: check jump to %s: %w", iptview.Cmd(p), ChainName(network), err)
			}
			if !ok {
				return fmt.Errorf("%s POSTROUTING lacks the jump to %s for %s", iptview.Cmd(p), ChainName(network), spec[1])
			}
		}
	}
	return nil
}

func (b *iptBackend) Available() error {
	for _, p := range families {
		if iptview.Binary(p) == "" {
			return fmt.Errorf("ipMasqBackend iptables needs %s, found neither on PATH nor in the system directories", iptview.Cmd(p))
		}
	}
	return nil
}
