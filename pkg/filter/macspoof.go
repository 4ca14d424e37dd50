package nat

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

func spoofTables(network string) (*nftables.Table, *nftables.Chain) {
	t := &nftables.Table{Family: nftables.TableFamilyBridge, Name: TableName(network)}
	policy := nftables.ChainPolicyAccept
	c := &nftables.Chain{Name: spoofChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-300), Policy: &policy}
	return t, c
}

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
func RemoveSpoofCheck(network, port string) error {
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
		if s, _ := userdata.GetString(r.UserData, userdata.TypeComment); s == port {
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
		return fmt.Errorf("remove mac spoof check for %s: %w", port, err)
	}
	return nil
}

// HasSpoofCheck reports whether port has its rule (for CHECK).
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

// SpoofCheckedPorts lists the ports that have a rule (for GC).
func SpoofCheckedPorts(network string) ([]string, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	rules, err := spoofRules(conn, network)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			out = append(out, s)
		}
	}
	return out, nil
}
