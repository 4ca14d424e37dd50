// Package nat masquerades traffic that leaves a container network, with one
// set of rules per network — never per container — so the rule count and
// the cost of ADD and DEL do not grow with the number of containers. Two
// backends: nftables over netlink, in a table of its own per network (no
// binary exec'd), and iptables through github.com/coreos/go-iptables.
//
// The rules are plain data (Plan), testable without root; the backends
// apply them idempotently: Ensure adds whatever is missing, so a ruleset
// someone flushed is put back by the next ADD.
package nat

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Backends by their config name (ipMasqBackend).
const (
	NFTables = "nftables"
	IPTables = "iptables"
)

// Backend applies the masquerade rules of networks.
type Backend interface {
	// Ensure makes the network's rules cover the spec's subnets, adding
	// what is missing, replacing what is out of date, leaving the rest.
	Ensure(s Spec) error
	// Remove deletes every rule of the network; none is not an error.
	Remove(network string) error
	// Check reports what is missing for the spec.
	Check(s Spec) error
	// Available reports whether the backend can work on this host.
	Available() error
}

// New returns the backend named kind ("" means nftables).
func New(kind string) (Backend, error) {
	switch kind {
	case "", NFTables:
		return nftBackend{}, nil
	case IPTables:
		return &iptBackend{}, nil
	}
	return nil, fmt.Errorf("unknown backend %q", kind)
}

// Spec is what a network wants masqueraded: traffic from Subnets to
// anywhere but the subnets themselves, multicast and NoMasq (destinations
// reached with the containers' own addresses, such as a cluster's pod
// CIDR on other nodes).
type Spec struct {
	Network string
	Subnets []netip.Prefix
	NoMasq  []netip.Prefix
}

// Rule is one masquerade rule: traffic from Subnet to anywhere but Subnet,
// NoMasq and multicast leaves with the host's address.
type Rule struct {
	Network string
	Subnet  netip.Prefix
	// NoMasq are the excepted destinations of Subnet's family.
	NoMasq []netip.Prefix
	// Comment tags the rule so that it can be found again; it changes when
	// NoMasq does.
	Comment string
}

// Multicast is the range that is never masqueraded, per family.
func (r Rule) Multicast() netip.Prefix {
	if r.Subnet.Addr().Is4() {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

// Plan returns the rules for a network's subnets: one per distinct subnet,
// sorted, whatever the number of containers.
func Plan(s Spec) []Rule {
	uniq := sortedUnique(s.Subnets)
	rules := make([]Rule, len(uniq))
	for i, sub := range uniq {
		var except []netip.Prefix
		for _, n := range sortedUnique(s.NoMasq) {
			if n.Addr().Is4() == sub.Addr().Is4() {
				except = append(except, n)
			}
		}
		c := subnetComment(s.Network, sub)
		if len(except) > 0 {
			var parts []string
			for _, n := range except {
				parts = append(parts, n.String())
			}
			c += " x" + shortHash(strings.Join(parts, ","))[:8]
		}
		rules[i] = Rule{Network: s.Network, Subnet: sub, NoMasq: except, Comment: c}
	}
	return rules
}

func sortedUnique(ps []netip.Prefix) []netip.Prefix {
	var uniq []netip.Prefix
	for _, p := range ps {
		p = p.Masked()
		if !slices.Contains(uniq, p) {
			uniq = append(uniq, p)
		}
	}
	slices.SortFunc(uniq, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return uniq
}

// subnetComment is the part of a rule's comment that names its subnet;
// a rule with that prefix and another ending is an out-of-date one.
func subnetComment(network string, subnet netip.Prefix) string {
	return comment(network) + " " + subnet.String()
}

func comment(network string) string { return "netns-cni:" + network }

// shortHash names things whose names are length-limited.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}
