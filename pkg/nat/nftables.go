package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
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

// present returns the rules now in the network's chain: netns-cni's by
// comment, and any other (one without a comment of the network's, which
// someone added to the chain: an "accept" before the masquerade rule
// would end it). Nil with no error when the table or chain does not
// exist.
func (b nftBackend) present(conn *nftables.Conn, network string) (map[string]*nftables.Rule, []*nftables.Rule, error) {
	t, c := b.tables(network)
	rules, err := conn.GetRules(t, c)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list nftables rules of %s: %w", t.Name, err)
	}
	have := map[string]*nftables.Rule{}
	var foreign []*nftables.Rule
	for _, r := range rules {
		s, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		if ok && (s == comment(network) || strings.HasPrefix(s, comment(network)+" ")) && have[s] == nil {
			have[s] = r
		} else {
			foreign = append(foreign, r)
		}
	}
	return have, foreign, nil
}

// missing returns a connection, the planned rules not in place (absent,
// or present with other expressions: altered under their comment), and
// the rules in the chain to delete: out of date for the same subnets,
// altered, or not netns-cni's.
func (b nftBackend) missing(s Spec) (*nftables.Conn, []Rule, []*nftables.Rule, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("nftables: %w", err)
	}
	have, foreign, err := b.present(conn, s.Network)
	if err != nil {
		return nil, nil, nil, err
	}
	var missing []Rule
	stale := foreign
	for _, r := range Plan(s) {
		if cur := have[r.Comment]; cur == nil || !sameExprs(cur.Exprs, nftExprs(r)) {
			missing = append(missing, r)
			if cur != nil {
				stale = append(stale, cur)
			}
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

// sameExprs reports whether a rule read back from the kernel does what
// want does: the same matches on the same fields with the same values,
// and the same verdict (the kernel's copy carries attributes the
// library fills in, so the two are compared by what they test).
func sameExprs(got, want []expr.Any) bool {
	return slices.Equal(describe(got), describe(want))
}

func describe(es []expr.Any) []string {
	out := make([]string, len(es))
	for i, e := range es {
		switch e := e.(type) {
		case *expr.Meta:
			out[i] = fmt.Sprintf("meta %d", e.Key)
		case *expr.Cmp:
			out[i] = fmt.Sprintf("cmp %d %x", e.Op, e.Data)
		case *expr.Payload:
			out[i] = fmt.Sprintf("payload %d %d %d", e.Base, e.Offset, e.Len)
		case *expr.Bitwise:
			out[i] = fmt.Sprintf("bitwise %x", e.Mask)
		case *expr.Masq:
			out[i] = "masq"
		case *expr.Verdict:
			out[i] = fmt.Sprintf("verdict %d %s", e.Kind, e.Chain)
		default:
			out[i] = fmt.Sprintf("%T", e)
		}
	}
	return out
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
		return fmt.Errorf("nftables table inet %s lacks the masquerade rule for %s (missing or altered)", TableName(s.Network), strings.Join(subs, ", "))
	}
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	if _, foreign, err := b.present(conn, s.Network); err != nil {
		return err
	} else if len(foreign) > 0 {
		return fmt.Errorf("nftables chain inet %s %s holds %d rule(s) netns-cni did not write, which may end the chain before its masquerade rules", TableName(s.Network), nftChain, len(foreign))
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
