package hostport

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// nftBackend keeps a network's forwards in the network's own table,
// "inet netns-cni-<network>" (pkg/nat's, beside the masquerade chain), as
// elements of maps; a fixed set of rules looks them up:
//
//	map hostports-ipv4        { type inet_proto . inet_service : ipv4_addr . inet_service }
//	map hostip-hostports-ipv4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//	(and -ipv6)
//	set hostports-hairpin-ipv4 { type ipv4_addr . ipv4_addr }   container . container, per mapped address
//	set hostports-localnet     { type ifname }                  links given route_localnet
//
//	chain hostports-prerouting  { type nat hook prerouting priority dstnat; fib daddr type local jump hostports }
//	chain hostports-output      { type nat hook output priority dstnat; fib daddr type local jump hostports }
//	chain hostports {
//		meta nfproto ipv4 dnat ip to ip daddr . meta l4proto . th dport map @hostip-hostports-ipv4
//		meta nfproto ipv4 dnat ip to meta l4proto . th dport map @hostports-ipv4
//		(and ipv6)
//	}
//	chain hostports-postrouting { type nat hook postrouting priority srcnat
//		ct status dnat ip saddr . ip daddr @hostports-hairpin-ipv4 masquerade
//		ct status dnat ip saddr 127.0.0.0/8 ip daddr . ip daddr @hostports-hairpin-ipv4 masquerade
//		ct status dnat ip6 saddr . ip6 daddr @hostports-hairpin-ipv6 masquerade
//	}
//	chain hostports-input { type filter hook input priority filter
//		iifname @hostports-localnet ip daddr 127.0.0.0/8 ct status & dnat == 0 drop
//	}
//
// Each element's comment names its owner, the attachment. An element is
// read, added or deleted by its key alone (a single-element get, no dump),
// so an ADD or DEL costs the same with ten mappings on the node as with
// ten thousand; only GC, and a DEL that is not told the mappings, list
// them. The caller serializes changes to one network (the network's lock).
type nftBackend struct{}

// Names of the objects in a network's table.
const (
	chainDNAT  = "hostports"
	chainPre   = "hostports-prerouting"
	chainOut   = "hostports-output"
	chainPost  = "hostports-postrouting"
	chainGuard = "hostports-input"
	setLocal   = "hostports-localnet"
	// sharedOwner marks a localnet element no single attachment owns (a
	// bridge): it goes with the table.
	sharedOwner = "shared"
)

// family is what differs between IPv4 and IPv6.
type family struct {
	name             string
	proto            byte // NFPROTO_*
	addr             nftables.SetDatatype
	saddrOff, dstOff uint32
	alen             uint32
}

var (
	ipv4     = family{"ipv4", unix.NFPROTO_IPV4, nftables.TypeIPAddr, 12, 16, 4}
	ipv6     = family{"ipv6", unix.NFPROTO_IPV6, nftables.TypeIP6Addr, 8, 24, 16}
	families = []family{ipv4, ipv6}
)

func familyOf(a netip.Addr) family {
	if a.Is4() {
		return ipv4
	}
	return ipv6
}

func (f family) ports() string   { return "hostports-" + f.name }
func (f family) hostIP() string  { return "hostip-hostports-" + f.name }
func (f family) hairpin() string { return "hostports-hairpin-" + f.name }

// tableOf is a network's table.
func tableOf(network string) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: nat.TableName(network)}
}

// sets are the table's maps and sets, keyed by name.
func sets(t *nftables.Table) map[string]*nftables.Set {
	portData := func(f family) nftables.SetDatatype {
		return nftables.MustConcatSetType(f.addr, nftables.TypeInetService)
	}
	out := map[string]*nftables.Set{}
	for _, f := range families {
		out[f.ports()] = &nftables.Set{Table: t, Name: f.ports(), IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService),
			DataType: portData(f)}
		out[f.hostIP()] = &nftables.Set{Table: t, Name: f.hostIP(), IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(f.addr, nftables.TypeInetProto, nftables.TypeInetService),
			DataType: portData(f)}
		out[f.hairpin()] = &nftables.Set{Table: t, Name: f.hairpin(), Concatenation: true,
			KeyType: nftables.MustConcatSetType(f.addr, f.addr)}
	}
	// Interface names are strings, which nftables keeps in host byte order.
	out[setLocal] = &nftables.Set{Table: t, Name: setLocal, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	return out
}

// Element encodings: each field of a concatenation padded to 4 bytes.
func pad4(b []byte) []byte { return append(b, make([]byte, (4-len(b)%4)%4)...) }

func port(p uint16) []byte { return pad4(binaryutil.BigEndian.PutUint16(p)) }

// elem is an entry's map element.
func elem(e Entry) (set string, key, val []byte) {
	f := familyOf(e.Pod)
	key = append(pad4([]byte{e.Proto}), port(e.HostPort)...)
	set = f.ports()
	if e.HostIP.IsValid() {
		key, set = append(e.HostIP.AsSlice(), key...), f.hostIP()
	}
	return set, key, append(e.Pod.AsSlice(), port(e.ContainerPort)...)
}

// entryOf decodes a map element of set back into its entry.
func entryOf(set string, key, val []byte) (Entry, bool) {
	for _, f := range families {
		var e Entry
		switch set {
		case f.hostIP():
			if len(key) < int(f.alen) {
				return e, false
			}
			e.HostIP, _ = netip.AddrFromSlice(key[:f.alen])
			key = key[f.alen:]
		case f.ports():
		default:
			continue
		}
		if len(key) != 8 || len(val) != int(f.alen)+4 {
			return e, false
		}
		e.Proto, e.HostPort = key[0], binaryutil.BigEndian.Uint16(key[4:6])
		e.Pod, _ = netip.AddrFromSlice(val[:f.alen])
		e.ContainerPort = binaryutil.BigEndian.Uint16(val[f.alen : f.alen+2])
		return e, true
	}
	return Entry{}, false
}

func hairpinKey(pod netip.Addr) []byte { return append(pod.AsSlice(), pod.AsSlice()...) }

func ifnameKey(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

// mapSets are the names of the maps that hold forwards.
func mapSets() []string {
	var out []string
	for _, f := range families {
		out = append(out, f.hostIP(), f.ports())
	}
	return out
}

// change is one batch to a network's table.
type change struct {
	conn *nftables.Conn
	t    *nftables.Table
	sets map[string]*nftables.Set
	n    int // elements added or deleted
	err  error
}

func newChange(network string) (*change, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	t := tableOf(network)
	return &change{conn: conn, t: t, sets: sets(t)}, nil
}

func (c *change) add(set string, key, val []byte, owner string) {
	if c.err == nil {
		c.err = c.conn.SetAddElements(c.sets[set], []nftables.SetElement{{Key: key, Val: val, Comment: owner}})
		c.n++
	}
}

func (c *change) del(set string, key []byte) {
	if c.err == nil {
		c.err = c.conn.SetDeleteElements(c.sets[set], []nftables.SetElement{{Key: key}})
		c.n++
	}
}

func (c *change) flush(what string) error {
	if c.err != nil {
		return c.err
	}
	if err := c.conn.Flush(); err != nil {
		return fmt.Errorf("nftables: %s: %w", what, err)
	}
	return nil
}

// missing reports the error of reading a table or set that does not exist
// (google/nftables formats some of its errors with %v, so the errno is
// lost to errors.Is there).
func missing(err error) bool {
	return errors.Is(err, unix.ENOENT) || err != nil && strings.Contains(err.Error(), "no such file or directory")
}

func (b nftBackend) Add(s Spec) error {
	g, err := newGetter()
	if err != nil {
		return err
	}
	defer g.close()
	c, err := newChange(s.Network)
	if err != nil {
		return err
	}
	// The table, sets and rules first in the batch: the elements go into them.
	fresh, err := b.skeleton(c)
	if err != nil {
		return err
	}
	for _, e := range s.Entries {
		set, key, val := elem(e)
		cur, found, err := g.get(c.t, set, key)
		if err != nil {
			return err
		}
		if found && bytes.Equal(cur.val, val) && cur.owner == s.Owner {
			continue // in place
		}
		if found {
			if cur.owner != s.Owner {
				old, _ := entryOf(set, key, cur.val)
				if s.Live == nil || s.Live(cur.owner, old.Pod) {
					return taken(old, cur.owner, s.Network)
				}
			}
			c.del(set, key) // stale, or this attachment's from an earlier ADD
		}
		c.add(set, key, val, s.Owner)
	}
	for _, pod := range Pods(s.Entries) {
		set := familyOf(pod).hairpin()
		cur, found, err := g.get(c.t, set, hairpinKey(pod))
		if err != nil {
			return err
		}
		if found && cur.owner == s.Owner {
			continue
		}
		if found {
			c.del(set, hairpinKey(pod)) // the address is this attachment's now: the last holder's is stale
		}
		c.add(set, hairpinKey(pod), nil, s.Owner)
	}
	localnet := s.HostIf != "" && slices.ContainsFunc(s.Entries, func(e Entry) bool { return e.Pod.Is4() })
	if localnet {
		if _, found, err := g.get(c.t, setLocal, ifnameKey(s.HostIf)); err != nil {
			return err
		} else if !found {
			c.add(setLocal, ifnameKey(s.HostIf), nil, s.guardOwner())
		}
	}
	if c.n > 0 || fresh {
		if err := c.flush("add port mappings"); err != nil {
			return err
		}
	}
	if localnet {
		return netconf.SetRouteLocalnet(s.HostIf, true)
	}
	return nil
}

// otherTables are the netns-cni networks' tables but self ("": all),
// whose forwards a new one must not shadow (Conflict).
func otherTables(conn *nftables.Conn, self string) ([]*nftables.Table, error) {
	ts, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list tables: %w", err)
	}
	var out []*nftables.Table
	for _, t := range ts {
		if strings.HasPrefix(t.Name, "netns-cni-") && t.Name != self {
			out = append(out, t)
		}
	}
	return out, nil
}

// skeleton adds the table, sets and chains to c's batch, and the rules
// when the chains lack them (first use, or someone flushed them), which
// it reports. Adding what exists is a no-op in nftables.
func (b nftBackend) skeleton(c *change) (bool, error) {
	t := c.t
	want := rules(t, c.sets)
	inPlace := true
	for _, ch := range chains(t) {
		have, err := c.conn.GetRules(t, ch)
		if err != nil && !missing(err) {
			return false, fmt.Errorf("nftables: list %s: %w", ch.Name, err)
		}
		inPlace = inPlace && len(have) == len(want[ch.Name])
	}
	if inPlace {
		return false, nil
	}
	c.conn.AddTable(t)
	for _, name := range slices.Sorted(maps.Keys(c.sets)) {
		if err := c.conn.AddSet(c.sets[name], nil); err != nil {
			return false, err
		}
	}
	want = rules(t, c.sets) // now with the sets' batch IDs
	for _, ch := range chains(t) {
		c.conn.AddChain(ch)
		c.conn.FlushChain(ch)
		for _, r := range want[ch.Name] {
			c.conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
		}
	}
	return true, nil
}

// chains are the table's chains of forwards; the regular chain first, as
// the base chains jump to it.
func chains(t *nftables.Table) []*nftables.Chain {
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Table: t, Name: name, Type: typ, Hooknum: hook, Priority: prio}
	}
	return []*nftables.Chain{
		{Table: t, Name: chainDNAT},
		base(chainPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest),
		base(chainOut, nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest),
		base(chainPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource),
		base(chainGuard, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter),
	}
}

// ipsDstNAT is IPS_DST_NAT, the conntrack status bit of a DNATed
// connection (linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// Registers: NFT_REG_1 is the 16 bytes NFT_REG32_00..03 (8-11), NFT_REG_2
// the next 16 (12-15); a concatenation fills 32-bit registers in turn.
const (
	reg1    = 1
	reg32_0 = 8
)

// regAfter is the 32-bit register after n bytes loaded from reg1.
func regAfter(n uint32) uint32 { return reg32_0 + (n+3)/4 }

// rules are the rules of each chain.
func rules(t *nftables.Table, sets map[string]*nftables.Set) map[string][][]expr.Any {
	nfproto := func(f family) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.proto}},
		}
	}
	load := func(off, n, reg uint32) expr.Any {
		return &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n}
	}
	lookup := func(set string, dreg bool) expr.Any {
		s := sets[set]
		return &expr.Lookup{SourceRegister: reg1, SetName: s.Name, SetID: s.ID, DestRegister: reg1, IsDestRegSet: dreg}
	}
	// dnat loads [daddr .] l4proto . dport from reg1 on, looks them up in
	// set, and DNATs to the address and port found.
	dnat := func(f family, set string, withAddr bool) []expr.Any {
		r := nfproto(f)
		next := uint32(reg1)
		n := uint32(0)
		if withAddr {
			r = append(r, load(f.dstOff, f.alen, reg1))
			n = f.alen
			next = regAfter(n)
		}
		r = append(r, &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next})
		r = append(r, &expr.Payload{OperationType: expr.PayloadLoad, DestRegister: regAfter(n + 4), Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		return append(r, lookup(set, true),
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.proto), RegAddrMin: reg1, RegProtoMin: regAfter(f.alen)})
	}
	dnatted := func(op expr.CmpOp) []expr.Any {
		return []expr.Any{
			&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
			&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
			&expr.Cmp{Op: op, Register: reg1, Data: make([]byte, 4)},
		}
	}
	loopback := func(off uint32) []expr.Any { // ip <saddr|daddr at off> 127.0.0.0/8
		return []expr.Any{load(off, 1, reg1), &expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{127}}}
	}
	hairpin := func(f family, src uint32) []expr.Any {
		return []expr.Any{load(src, f.alen, reg1), load(f.dstOff, f.alen, regAfter(f.alen)), lookup(f.hairpin(), false), &expr.Masq{}}
	}
	local := []expr.Any{
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Verdict{Kind: expr.VerdictJump, Chain: chainDNAT},
	}
	cat := func(parts ...[]expr.Any) []expr.Any { return slices.Concat(parts...) }
	var dnats [][]expr.Any
	for _, f := range families {
		dnats = append(dnats, dnat(f, f.hostIP(), true), dnat(f, f.ports(), false))
	}
	return map[string][][]expr.Any{
		chainDNAT: dnats,
		chainPre:  {local},
		chainOut:  {local},
		chainPost: {
			cat(dnatted(expr.CmpOpNeq), nfproto(ipv4), hairpin(ipv4, ipv4.saddrOff)),
			cat(dnatted(expr.CmpOpNeq), nfproto(ipv4), loopback(ipv4.saddrOff), hairpin(ipv4, ipv4.dstOff)),
			cat(dnatted(expr.CmpOpNeq), nfproto(ipv6), hairpin(ipv6, ipv6.saddrOff)),
		},
		chainGuard: {cat(
			[]expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1}, lookup(setLocal, false)},
			nfproto(ipv4), loopback(ipv4.dstOff), dnatted(expr.CmpOpEq),
			[]expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}})},
	}
}

func (b nftBackend) Remove(s Spec, pods []netip.Addr) ([]Entry, error) {
	g, err := newGetter()
	if err != nil {
		return nil, err
	}
	defer g.close()
	c, err := newChange(s.Network)
	if err != nil {
		return nil, err
	}
	// A mapped address has a hairpin element: one read per address tells
	// whether the attachment has forwards at all.
	mapped := false
	for _, pod := range pods {
		set := familyOf(pod).hairpin()
		cur, found, err := g.get(c.t, set, hairpinKey(pod))
		if err != nil {
			return nil, err
		}
		if found && cur.owner == s.Owner {
			c.del(set, hairpinKey(pod))
			mapped = true
		}
	}
	entries := s.Entries
	if entries == nil && (mapped || len(pods) == 0) {
		// Not told the mappings (a DEL without runtimeConfig): list them.
		all, err := b.list(c.conn, c.t)
		if err != nil {
			return nil, err
		}
		entries = all[s.Owner]
	}
	var removed []Entry
	for _, e := range entries {
		set, key, _ := elem(e)
		cur, found, err := g.get(c.t, set, key)
		if err != nil {
			return nil, err
		}
		if found && cur.owner == s.Owner {
			c.del(set, key)
			removed = append(removed, e)
		}
	}
	if s.Entries != nil && mapped && len(removed) < len(s.Entries) {
		// The mappings given are not (all) the ones the ADD made — a
		// runtime that passes other ones to DEL: the attachment's own
		// are listed and go too, as the iptables backend removes by owner.
		all, err := b.list(c.conn, c.t)
		if err != nil {
			return nil, err
		}
		for _, e := range all[s.Owner] {
			if !slices.Contains(removed, e) {
				set, key, _ := elem(e)
				c.del(set, key)
				removed = append(removed, e)
			}
		}
	}
	if s.HostIf != "" && !s.Shared {
		if cur, found, err := g.get(c.t, setLocal, ifnameKey(s.HostIf)); err != nil {
			return nil, err
		} else if found && cur.owner == s.Owner {
			c.del(setLocal, ifnameKey(s.HostIf))
		}
	}
	if c.n == 0 {
		return nil, nil
	}
	return removed, c.flush("remove port mappings")
}

// elements lists set of t; none when t or the set does not exist.
func elements(conn *nftables.Conn, s *nftables.Set) ([]nftables.SetElement, error) {
	els, err := conn.GetSetElements(s)
	if missing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nftables: list %s: %w", s.Name, err)
	}
	return els, nil
}

// list returns the forwards in t by owner.
func (b nftBackend) list(conn *nftables.Conn, t *nftables.Table) (map[string][]Entry, error) {
	out := map[string][]Entry{}
	ss := sets(t)
	for _, name := range mapSets() {
		els, err := elements(conn, ss[name])
		if err != nil {
			return nil, err
		}
		for _, el := range els {
			if e, ok := entryOf(name, el.Key, el.Val); ok {
				out[el.Comment] = append(out[el.Comment], e)
			}
		}
	}
	return out, nil
}

func (b nftBackend) List(network string) (map[string][]Entry, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return b.list(conn, tableOf(network))
}

func (b nftBackend) Check(s Spec) error {
	g, err := newGetter()
	if err != nil {
		return err
	}
	defer g.close()
	c, err := newChange(s.Network)
	if err != nil {
		return err
	}
	if fresh, err := b.skeleton(c); err != nil {
		return err
	} else if fresh {
		return fmt.Errorf("nftables table inet %s lacks the rules of the port mappings", c.t.Name)
	}
	for _, e := range s.Entries {
		set, key, val := elem(e)
		cur, found, err := g.get(c.t, set, key)
		if err != nil {
			return err
		}
		switch {
		case !found:
			return fmt.Errorf("port mapping %s: not in map %s of table inet %s", e, set, c.t.Name)
		case !bytes.Equal(cur.val, val) || cur.owner != s.Owner:
			old, _ := entryOf(set, key, cur.val)
			return fmt.Errorf("port mapping %s: map %s has %s for attachment %s instead", e, set, old, cur.owner)
		}
	}
	return checkLocalnet(s)
}

func (b nftBackend) Collect(network string, keep func(owner string) bool) ([]Entry, error) {
	c, err := newChange(network)
	if err != nil {
		return nil, err
	}
	var removed []Entry
	for _, name := range slices.Sorted(maps.Keys(c.sets)) {
		els, err := elements(c.conn, c.sets[name])
		if err != nil {
			return nil, err
		}
		for _, el := range els {
			if el.Comment == sharedOwner || keep(el.Comment) {
				continue
			}
			c.del(name, el.Key)
			if e, ok := entryOf(name, el.Key, el.Val); ok {
				removed = append(removed, e)
			}
		}
	}
	if c.n == 0 {
		return nil, nil
	}
	return removed, c.flush("collect port mappings")
}

func (b nftBackend) Drop(network string) error {
	c, err := newChange(network)
	if err != nil {
		return err
	}
	var errs []error
	els, err := elements(c.conn, c.sets[setLocal])
	errs = append(errs, err)
	for _, el := range els {
		errs = append(errs, releaseLocalnet(string(bytes.TrimRight(el.Key, "\x00")), network))
	}
	c.conn.DelTable(c.t)
	if err := c.conn.Flush(); err != nil && !missing(err) {
		errs = append(errs, fmt.Errorf("nftables: delete table %s: %w", c.t.Name, err))
	}
	return errors.Join(errs...)
}
