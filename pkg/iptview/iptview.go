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
	"slices"
	"strings"

	"github.com/google/nftables"
)

// legacyFiles list the x_tables tables loaded in the calling thread's
// namespace, per family.
var legacyFiles = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "/proc/thread-self/net/ip_tables_names",
	nftables.TableFamilyIPv6: "/proc/thread-self/net/ip6_tables_names",
}

// Lacks reports whether, certainly, no iptables chain of family fam in the
// calling thread's namespace is one match selects (by table and chain
// name). False when it cannot tell: x_tables tables are loaded here
// (iptables-legacy), or nftables cannot be read.
func Lacks(fam nftables.TableFamily, match func(table, chain string) bool) bool {
	if b, err := os.ReadFile(legacyFiles[fam]); err == nil && strings.TrimSpace(string(b)) != "" {
		return false
	} else if err != nil && !os.IsNotExist(err) {
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
