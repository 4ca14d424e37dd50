package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Range is one pool of addresses: [Start, End] inside Subnet, Gateway never
// handed out.
type Range struct {
	Subnet     netip.Prefix
	Start, End netip.Addr
	Gateway    netip.Addr
}

// RangeSet is a list of ranges of one family; one address is taken from a
// set per attachment.
type RangeSet []Range

// Contains reports whether a is in [Start, End].
func (r *Range) Contains(a netip.Addr) bool {
	return a.BitLen() == r.Start.BitLen() && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

func (r *Range) overlaps(o *Range) bool {
	return r.Start.BitLen() == o.Start.BitLen() && r.Start.Compare(o.End) <= 0 && o.Start.Compare(r.End) <= 0
}

func (r Range) String() string { return r.Start.String() + "-" + r.End.String() }

// RangeFor returns the range of the set containing a, or nil.
func (s RangeSet) RangeFor(a netip.Addr) *Range {
	for i := range s {
		if s[i].Contains(a) {
			return &s[i]
		}
	}
	return nil
}

// Overlaps reports whether any range of s overlaps any of o.
func (s RangeSet) Overlaps(o RangeSet) bool {
	for i := range s {
		for j := range o {
			if s[i].overlaps(&o[j]) {
				return true
			}
		}
	}
	return false
}

// Is4 reports whether the set is IPv4.
func (s RangeSet) Is4() bool { return len(s) > 0 && s[0].Start.Is4() }

func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// gatewayNote says which gateways inside the set's ranges are not handed
// out, for messages that give the ranges and a count of addresses.
func (s RangeSet) gatewayNote() string {
	var gws []string
	for _, r := range s {
		if r.Contains(r.Gateway) {
			gws = append(gws, r.Gateway.String())
		}
	}
	if len(gws) == 0 {
		return ""
	}
	return " (the gateway " + strings.Join(gws, ", ") + " is not handed out)"
}

// Size is the number of addresses the set can hand out.
func (s RangeSet) Size() uint64 {
	var n uint64
	for _, r := range s {
		n += span(r.Start, r.End)
		if r.Contains(r.Gateway) {
			n--
		}
	}
	return n
}

// span counts the addresses in [a, b], saturating at 2^63.
func span(a, b netip.Addr) uint64 {
	x, y := a.As16(), b.As16()
	var d uint64
	borrow := 0
	// 128-bit subtraction, keeping only the low 64 bits unless higher differ.
	for i := 15; i >= 0; i-- {
		v := int(y[i]) - int(x[i]) - borrow
		borrow = 0
		if v < 0 {
			v += 256
			borrow = 1
		}
		if i >= 8 {
			d |= uint64(v) << (8 * (15 - i))
		} else if v != 0 {
			return 1 << 63
		}
	}
	if d >= 1<<63 {
		return 1 << 63
	}
	return d + 1
}

// next returns the address after a in the set, wrapping from the end of
// the last range to the start of the first: the round-robin order of the
// reference allocator.
func (s RangeSet) next(a netip.Addr) netip.Addr {
	for i := range s {
		if s[i].Contains(a) {
			if a != s[i].End {
				return a.Next()
			}
			return s[(i+1)%len(s)].Start
		}
	}
	return s[0].Start
}

// parseRangeSet parses and checks one set; key names it in errors and in
// the notes of what it adjusted.
func parseRangeSet(key string, raw []rawRange) (RangeSet, []error, []string) {
	if len(raw) == 0 {
		return nil, []error{fmt.Errorf("%q: empty range set", key)}, nil
	}
	var set RangeSet
	var errs []error
	var notes []string
	for i, rr := range raw {
		k := fmt.Sprintf("%s[%d]", key, i)
		if key == "ipam" {
			k = "ipam" // the legacy single range: its keys sit at the ipam level
		}
		r, rerrs, rnotes := parseRange(k, rr)
		errs = append(errs, rerrs...)
		notes = append(notes, rnotes...)
		if len(rerrs) == 0 {
			set = append(set, r)
		}
	}
	if len(errs) > 0 {
		return nil, errs, nil
	}
	if !slices.ContainsFunc(set, func(r Range) bool { return r.Start != r.End || r.Start != r.Gateway }) {
		return nil, []error{fmt.Errorf("%q: every range of the set holds only its gateway (%s), which is never handed out; widen one", key, set[0])}, nil
	}
	for i := range set {
		if set[i].Start.Is4() != set[0].Start.Is4() {
			return nil, []error{fmt.Errorf("%q: mixes IPv4 and IPv6 ranges; give each family its own range set", key)}, nil
		}
		for j := i + 1; j < len(set); j++ {
			if set[i].overlaps(&set[j]) {
				errs = append(errs, fmt.Errorf("%q: ranges %s and %s overlap", key, set[i], set[j]))
			}
		}
	}
	return set, errs, notes
}

// parseRange parses one range. An IPv4 subnet's network and broadcast
// addresses are never handed out: a rangeStart on the network address
// starts the range after it and a rangeEnd on the broadcast address ends
// it before it, each with a note (the reference accepts both and hands
// those addresses out); a range holding nothing else, or a gateway on
// either, is an error.
func parseRange(key string, rr rawRange) (Range, []error, []string) {
	var r Range
	p, err := netip.ParsePrefix(rr.Subnet)
	if err != nil {
		return r, []error{fmt.Errorf("%q: %q is not a CIDR subnet", key+".subnet", rr.Subnet)}, nil
	}
	p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits())
	if p.Masked() != p {
		return r, []error{fmt.Errorf("%q: %s has host bits set; the subnet is %s", key+".subnet", rr.Subnet, p.Masked())}, nil
	}
	if p.Bits() > p.Addr().BitLen()-2 {
		return r, []error{fmt.Errorf("%q: %s is too small to allocate from; use /30 or larger (IPv6: /126)", key+".subnet", p)}, nil
	}
	if what := notUnicast(p); what != "" {
		return r, []error{fmt.Errorf("%q: %s %s: a pod's address must be one a host can route to (the kernel refuses some, and a forward rule for it would take all traffic)", key+".subnet", p, what)}, nil
	}
	r.Subnet = p
	var errs []error
	var notes []string
	first, last := p.Addr().Next(), lastUsable(p)
	addr := func(field, val string, def netip.Addr) netip.Addr {
		if val == "" {
			return def
		}
		a, err := netip.ParseAddr(val)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %q is not an IP address", key+"."+field, val))
			return def
		}
		a = a.Unmap()
		network, broadcast := a.Is4() && a == p.Addr(), a.Is4() && a == last.Next()
		switch {
		case !p.Contains(a):
			errs = append(errs, fmt.Errorf("%q: %s is outside subnet %s", key+"."+field, a, p))
		case (network || broadcast) && field == "gateway":
			errs = append(errs, fmt.Errorf("%q: %s is the %s address of %s; a gateway must be a host address", key+"."+field, a, map[bool]string{true: "network", false: "broadcast"}[network], p))
		case network && field == "rangeStart":
			notes = append(notes, fmt.Sprintf("%q: %s is the network address of %s, which is never handed out; the range starts at %s", key+"."+field, a, p, first))
			return first
		case broadcast && field == "rangeEnd":
			notes = append(notes, fmt.Sprintf("%q: %s is the broadcast address of %s, which is never handed out; the range ends at %s", key+"."+field, a, p, last))
			return last
		case network || broadcast:
			errs = append(errs, fmt.Errorf("%q: %s is the %s address of %s, which is never handed out; the range holds no address to hand out",
				key+"."+field, a, map[bool]string{true: "network", false: "broadcast"}[network], p))
		}
		return a
	}
	r.Gateway = addr("gateway", rr.Gateway, first)
	r.Start = addr("rangeStart", rr.RangeStart, first)
	r.End = addr("rangeEnd", rr.RangeEnd, last)
	if len(errs) == 0 && r.Start.Compare(r.End) > 0 {
		errs = append(errs, fmt.Errorf("%q: rangeStart %s is after rangeEnd %s", key, r.Start, r.End))
	}
	return r, errs, notes
}

// lastUsable is the last address of p, less the IPv4 broadcast address.
func lastUsable(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	bits := p.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	a, _ := netip.AddrFromSlice(b)
	if a.Is4() {
		a = a.Prev()
	}
	return a
}

// reserved are the blocks no pod address may come from: "this network",
// loopback and multicast (RFC 6890), by family.
var reserved = []struct {
	p    netip.Prefix
	what string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `holds "this network" addresses (0.0.0.0/8)`},
	{netip.MustParsePrefix("127.0.0.0/8"), "holds loopback addresses (127.0.0.0/8)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "holds multicast addresses (224.0.0.0/4)"},
	{netip.MustParsePrefix("::/127"), "holds the unspecified or the loopback address (::, ::1)"},
	{netip.MustParsePrefix("ff00::/8"), "holds multicast addresses (ff00::/8)"},
}

// notUnicast says what makes subnet p no place for pod addresses, "" when
// nothing does.
func notUnicast(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "is every address (a default route, not a subnet)"
	}
	for _, r := range reserved {
		if r.p.Overlaps(p) {
			return r.what
		}
	}
	return ""
}
