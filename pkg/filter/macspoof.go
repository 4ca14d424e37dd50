// Package filter holds the per-network filtering rules netns-cni keeps on
// the host, as opposed to address translation (pkg/nat): the bridge's MAC
// spoof check. Rules live in nftables tables of the network's own, changed
// over netlink (no binary exec'd), and carry tags that let DEL and GC find
// them without the container's namespace.
package filter

import (
	"errors"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// MAC spoof checking ("macspoofchk" of the bridge plugin): frames entering
// the bridge from a container's port whose source MAC is not the
// container's are dropped. One rule per port, in a bridge-family table of
// the network's own, "bridge netns-cni-<network>"; each rule is tagged with
// its port's name so that DEL removes it without the container's
// namespace.

const spoofChain = "macspoof"

// tableName is the bridge-family table of a network.
func tableName(network string) string { return "netns-cni-" + network }

func spoofTables(network string) (*nftables.Table, *nftables.Chain) {
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: tableName(network)}
	policy := nftables.ChainPolicyAccept
	c := &nftables.Chain{Name: spoofChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300), Policy: &policy}
	return t, c
}

// Rule changes of a network's table must not interleave between processes
// (removing the last rule drops the table while another process may be
// adding one): callers hold the network's lock (pkg/lock).

// AddSpoofCheck drops frames from port whose source MAC is not mac.
func AddSpoofCheck(network, port string, mac net.HardwareAddr) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t, c := spoofTables(network)
	conn.AddTable(t)
	conn.AddChain(c)
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, port)
	conn.AddRule(&nftables.Rule{Table: t, Chain: c, UserData: userdata.AppendString(nil, userdata.TypeComment, port), Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: name},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: mac},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add mac spoof check for %s: %w", port, err)
	}
	return nil
}

// spoofRules returns the rules of the network's chain (none when absent).
func spoofRules(conn *nftables.Conn, network string) ([]*nftables.Rule, error) {
	t, c := spoofTables(network)
	rules, err := conn.GetRules(t, c)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	return rules, err
}

// RemoveSpoofCheck deletes port's rule, and the table with the last one.
// A rule that is gone is no error.
func RemoveSpoofCheck(network, port string) error {
	return removeSpoofChecks(network, func(p string) bool { return p == port })
}

// RemoveSpoofChecksExcept deletes the rule of every port not in keep (GC).
func RemoveSpoofChecksExcept(network string, keep map[string]bool) error {
	return removeSpoofChecks(network, func(p string) bool { return !keep[p] })
}

// removeSpoofChecks deletes the rules of the ports drop selects, and the
// table with the last rule.
func removeSpoofChecks(network string, drop func(port string) bool) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	rules, err := spoofRules(conn, network)
	if err != nil {
		return fmt.Errorf("list mac spoof checks: %w", err)
	}
	left := 0
	for _, r := range rules {
		if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); drop(s) {
			if err := conn.DelRule(r); err != nil {
				return err
			}
		} else {
			left++
		}
	}
	if len(rules) > 0 && left == 0 {
		t, _ := spoofTables(network)
		conn.DelTable(t)
	}
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove mac spoof checks of %s: %w", network, err)
	}
	return nil
}

// CheckSpoofCheck reports port's rule missing (for CHECK).
func CheckSpoofCheck(network, port string) error {
	ok, err := HasSpoofCheck(network, port)
	if err != nil {
		return fmt.Errorf("host: mac spoof check of %s: %w", port, err)
	}
	if !ok {
		return fmt.Errorf("host: mac spoof check of %s missing", port)
	}
	return nil
}

// HasSpoofCheck reports whether port has its rule.
func HasSpoofCheck(network, port string) (bool, error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("nftables: %w", err)
	}
	rules, err := spoofRules(conn, network)
	if err != nil {
		return false, err
	}
	for _, r := range rules {
		if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == port {
			return true, nil
		}
	}
	return false, nil
}
