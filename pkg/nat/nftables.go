package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// nftBackend keeps each network's rules in a table of its own,
// "inet netns-cni-<network>", with one nat postrouting chain. Removing the
// network's last container drops the table whole.
type nftBackend struct{}

// TableName is the nftables table of a network.
func TableName(network string) string { return "netns-cni-" + network }

const nftChain = "postrouting"

func (nftBackend) tables(network string) (*nftables.Table, *nftables.Chain) {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(network)}
	c := &nftables.Chain{
		Name: nftChain, Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource,
	}
	return t, c
}

// present returns the rules now in the network's chain by comment; nil
// with no error when the table or chain does not exist.
func (b nftBackend) present(conn *nftables.Conn, network string) (map[string]*nftables.Rule, error) {
	t, c := b.tables(network)
	rules, err := conn.GetRules(t, c)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list nftables rules of %s: %w", t.Name, err)
	}
	have := map[string]*nftables.Rule{}
	for _, r := range rules {
		if s, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok {
			have[s] = r
		}
	}
	return have, nil
}

// missing returns a connection, the planned rules not in place, and the
// rules in place for the same subnets that are out of date.
func (b nftBackend) missing(s Spec) (*nftables.Conn, []Rule, []*nftables.Rule, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nftables: %w", err)
	}
	have, err := b.present(conn, s.Network)
	if err != nil {
		return nil, nil, nil, err
	}
	var missing []Rule
	var stale []*nftables.Rule
	for _, r := range Plan(s) {
		if have[r.Comment] == nil {
			missing = append(missing, r)
		}
		prefix := subnetComment(s.Network, r.Subnet)
		for c, old := range have {
			if c != r.Comment && (c == prefix || strings.HasPrefix(c, prefix+" ")) {
				stale = append(stale, old)
			}
		}
	}
	return conn, missing, stale, nil
}

func (b nftBackend) Ensure(s Spec) error {
	conn, missing, stale, err := b.missing(s)
	if err != nil {
		return err
	}
	if len(missing) == 0 && len(stale) == 0 {
		return nil
	}
	t, c := b.tables(s.Network)
	conn.AddTable(t) // both are no-ops when they exist
	conn.AddChain(c)
	for _, r := range stale {
		if err := conn.DelRule(r); err != nil {
			return err
		}
	}
	for _, r := range missing {
		conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: nftExprs(r),
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("add nftables masquerade rules to %s: %w", t.Name, err)
	}
	return nil
}

func (b nftBackend) Remove(network string) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t, _ := b.tables(network)
	conn.DelTable(t)
	err = conn.Flush()
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", t.Name, err)
	}
	return nil
}

func (b nftBackend) Check(s Spec) error {
	_, missing, _, err := b.missing(s)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		var subs []string
		for _, r := range missing {
			subs = append(subs, r.Subnet.String())
		}
		return fmt.Errorf("nftables table inet %s lacks the masquerade rule for %s", TableName(s.Network), strings.Join(subs, ", "))
	}
	return nil
}

func (b nftBackend) Available() error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, err := conn.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return fmt.Errorf("nftables over netlink does not work here: %w", err)
	}
	return nil
}

// nftExprs: meta nfproto F; <family> saddr & mask == net; daddr & mask !=
// net; daddr & mcast-mask != mcast; masquerade.
func nftExprs(r Rule) []expr.Any {
	proto, saddrOff, daddrOff, alen := byte(unix.NFPROTO_IPV4), uint32(12), uint32(16), uint32(4)
	if r.Subnet.Addr().Is6() {
		proto, saddrOff, daddrOff, alen = unix.NFPROTO_IPV6, 8, 24, 16
	}
	match := func(off uint32, p netip.Prefix, op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: alen, Mask: mask(p), Xor: make([]byte, alen)},
			&expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()},
		}
	}
	exprs := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
	exprs = append(exprs, match(saddrOff, r.Subnet, expr.CmpOpEq)...)
	exprs = append(exprs, match(daddrOff, r.Subnet, expr.CmpOpNeq)...)
	for _, n := range r.NoMasq {
		exprs = append(exprs, match(daddrOff, n, expr.CmpOpNeq)...)
	}
	exprs = append(exprs, match(daddrOff, r.Multicast(), expr.CmpOpNeq)...)
	return append(exprs, &expr.Masq{})
}

func mask(p netip.Prefix) []byte {
	b := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}
