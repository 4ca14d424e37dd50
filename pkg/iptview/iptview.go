// Package iptview answers "is this iptables chain there?" without
// exec'ing iptables, where the answer can be trusted. iptables-nft keeps
// its rules in nftables tables, readable over netlink in microseconds;
// iptables-legacy keeps them in the kernel's x_tables, which netlink does
// not show. So a "no" read over netlink counts only when this network
// namespace has no x_tables table loaded: then no iptables binary of
// either kind holds a rule here. Otherwise the caller execs iptables.
package iptview

import (
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
)

// legacyFiles list the x_tables tables loaded in the calling thread's
// namespace, per family.
var legacyFiles = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "/proc/thread-self/net/ip_tables_names",
	nftables.TableFamilyIPv6: "/proc/thread-self/net/ip6_tables_names",
}

// Legacy reports whether x_tables tables of family fam (iptables-legacy)
// may be loaded in the calling thread's namespace: true when it cannot
// tell. Their rules are invisible over netlink and their changes do not
// count in the nftables ruleset generation.
func Legacy(fam nftables.TableFamily) bool {
	b, err := os.ReadFile(legacyFiles[fam])
	if err != nil {
		return !os.IsNotExist(err)
	}
	return strings.TrimSpace(string(b)) != ""
}

// Family is the nftables family iptables-nft keeps protocol p's tables in.
func Family(p iptables.Protocol) nftables.TableFamily {
	if p == iptables.ProtocolIPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// Absent reports whether, certainly, no iptables chain of protocol p that
// match selects exists in the calling thread's namespace: there is no
// iptables binary for p (so no rule of ours was ever written with it), or
// Lacks says so. Callers exec iptables only when it is false.
func Absent(p iptables.Protocol, match func(table, chain string) bool) bool {
	cmd := "iptables"
	if p == iptables.ProtocolIPv6 {
		cmd = "ip6tables"
	}
	if _, err := exec.LookPath(cmd); err != nil {
		return true
	}
	return Lacks(Family(p), match)
}

// Lacks reports whether, certainly, no iptables chain of family fam in the
// calling thread's namespace is one match selects (by table and chain
// name). False when it cannot tell: x_tables tables are loaded here
// (iptables-legacy), or nftables cannot be read.
func Lacks(fam nftables.TableFamily, match func(table, chain string) bool) bool {
	if Legacy(fam) {
		return false
	}
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	chains, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return false
	}
	return !slices.ContainsFunc(chains, func(c *nftables.Chain) bool { return match(c.Table.Name, c.Name) })
}
