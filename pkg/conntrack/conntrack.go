// Package conntrack forgets the kernel's connection tracking entries of
// addresses a network released. An entry outlives the container that made
// it; when round-robin allocation hands the address out again, UDP replies
// of the old flow reach the new container (kubernetes#66651, a standing
// request on the reference portmap), and a client that keeps sending to
// the old container — directly, or through a host port — keeps its entry.
// DEL and GC delete the entries whose original source or reply source is
// a released address: the flows the container started, NATed or not, and
// those it answered, straight or DNATed to it.
//
// Over netlink (vishvananda/netlink), no exec. Every dump walks all the
// buckets of the table's hash (262,144 on a 24 GiB node: ~2.4 ms here)
// whatever it returns, so the fewest dumps win: none when the table is
// empty; with a few thousand entries, one dump of both families filtered here;
// in a bigger table, for IPv4, one per address and side filtered by the
// kernel (CTA_FILTER, Linux 5.8 and later), so only the matches cross to
// user space. Never for IPv6: the kernel's IPv6 address filter is
// inverted (ctnetlink_filter_match_tuple rejects an entry when
// !ipv6_addr_cmp, that is when the addresses are equal; seen on 6.18), so
// a filtered dump returns every entry but the address's — deleting them
// would cut every other container's IPv6 flows.
package conntrack

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Netlink attributes the library does not name (linux/netfilter/
// nfnetlink_conntrack.h).
const (
	ctaFilter          = 25     // CTA_FILTER
	ctaFilterOrigFlags = 1      // CTA_FILTER_ORIG_FLAGS
	ctaFilterReplFlags = 2      // CTA_FILTER_REPLY_FLAGS
	filterFlagIPSrc    = 1 << 0 // CTA_FILTER_F_CTA_IP_SRC
	filterFlagIPDst    = 1 << 1 // CTA_FILTER_F_CTA_IP_DST
	filterFlagProto    = 1 << 3 // CTA_FILTER_F_CTA_PROTO_NUM
	filterFlagDstPort  = 1 << 5 // CTA_FILTER_F_CTA_PROTO_DST_PORT
)

// side is which address of which tuple an entry is matched on.
type side struct {
	tuple int  // nl.CTA_TUPLE_ORIG or nl.CTA_TUPLE_REPLY
	src   bool // the tuple's source, else its destination
}

var sides = []side{{nl.CTA_TUPLE_ORIG, true}, {nl.CTA_TUPLE_REPLY, true}}

// smallTable is the entry count up to which one unfiltered dump of both
// families, filtered here, beats a kernel-filtered dump per address and
// side (a variable for the tests).
var smallTable = 4096

// Forget deletes, in the network namespace of the calling thread, every
// conntrack entry whose original source or reply source is one of addrs.
// It returns how many it deleted.
func Forget(addrs []netip.Addr) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	count, known := entries()
	if known && count == 0 {
		return 0, nil
	}
	// One dump of both families when the table is small; in a big one
	// only the IPv6 addresses are matched here, from a dump of IPv6 alone.
	small := known && count <= smallTable
	fam := uint8(unix.AF_INET6)
	if small {
		fam = unix.AF_UNSPEC
	}
	var byDump, filtered []netip.Addr
	for _, a := range addrs {
		if a.Is6() || small {
			byDump = append(byDump, a)
		} else {
			filtered = append(filtered, a)
		}
	}
	n, err := forgetByDump(byDump, fam)
	errs := []error{err}
	for _, a := range filtered {
		for _, s := range sides {
			raws, err := dump(a, s)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				d, err := forgetInUserSpace(a, s) // a kernel without CTA_FILTER
				n += d
				errs = append(errs, err)
				continue
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("conntrack: list entries of %s: %w", a, err))
				continue
			}
			d, err := deleteAll(family(a), raws)
			n += d
			errs = append(errs, wrap(a.String(), err))
		}
	}
	return n, errors.Join(errs...)
}

// entries is the number of entries in the calling thread's namespace's
// table; false when it cannot tell (no conntrack loaded: then there are
// none, but the dumps find that out cheaply too).
func entries() (int, bool) {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
	if err != nil {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return n, err == nil
}

// forgetByDump is Forget with one dump of the table's family fam
// (AF_UNSPEC: both), matched here (deleteMatching).
func forgetByDump(addrs []netip.Addr, fam uint8) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	want := map[netip.Addr]bool{}
	for _, a := range addrs {
		want[a] = true
	}
	return deleteMatching("delete entries", fam, func(e entry) bool { return want[e.origSrc] || want[e.replySrc] })
}

// entry is what matching needs of a dumped conntrack entry.
type entry struct {
	family            uint8
	origSrc, replySrc netip.Addr
	proto             uint8
	origDstPort       uint16
}

// deleteMatching dumps the table once — the entries of family fam, or of
// both with AF_UNSPEC (a dump walks every bucket of the hash whatever
// family it asks for, so in a small table a dual-stack pod pays one walk,
// not two) — and deletes the entries match selects, each in its own family.
func deleteMatching(what string, fam uint8, match func(entry) bool) (int, error) {
	raws, err := newRequest(fam, nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP).Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return 0, wrap(what, err)
	}
	n := 0
	var errs []error
	for _, raw := range raws {
		if len(raw) < 4 || !match(parseEntry(raw)) {
			continue
		}
		d, err := deleteAll(raw[0], [][]byte{raw})
		n += d
		errs = append(errs, err)
	}
	return n, wrap(what, errors.Join(errs...))
}

// parseEntry reads a dumped entry: the netfilter header (its family
// first), then the attributes.
func parseEntry(raw []byte) entry {
	e := entry{family: raw[0]}
	attrs, err := nl.ParseRouteAttr(raw[4:])
	if err != nil {
		return e
	}
	for _, a := range attrs {
		switch a.Attr.Type &^ unix.NLA_F_NESTED {
		case nl.CTA_TUPLE_ORIG:
			e.origSrc, e.proto, e.origDstPort = parseTuple(a.Value)
		case nl.CTA_TUPLE_REPLY:
			e.replySrc, _, _ = parseTuple(a.Value)
		}
	}
	return e
}

// parseTuple reads a CTA_TUPLE_ORIG or _REPLY: its source address, IP
// protocol and destination port.
func parseTuple(data []byte) (src netip.Addr, proto uint8, dport uint16) {
	attrs, _ := nl.ParseRouteAttr(data)
	for _, a := range attrs {
		inner, _ := nl.ParseRouteAttr(a.Value)
		switch a.Attr.Type &^ unix.NLA_F_NESTED {
		case nl.CTA_TUPLE_IP:
			for _, ip := range inner {
				if t := ip.Attr.Type &^ unix.NLA_F_NESTED; t == nl.CTA_IP_V4_SRC || t == nl.CTA_IP_V6_SRC {
					src, _ = netip.AddrFromSlice(ip.Value)
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for _, p := range inner {
				switch p.Attr.Type &^ unix.NLA_F_NESTED {
				case nl.CTA_PROTO_NUM:
					if len(p.Value) > 0 {
						proto = p.Value[0]
					}
				case nl.CTA_PROTO_DST_PORT:
					if len(p.Value) == 2 {
						dport = uint16(p.Value[0])<<8 | uint16(p.Value[1])
					}
				}
			}
		}
	}
	return src, proto, dport
}

// deleteAll deletes the dumped entries raws of family fam; one gone
// meanwhile is no error.
func deleteAll(fam uint8, raws [][]byte) (int, error) {
	n := 0
	var errs []error
	for _, raw := range raws {
		req := newRequest(fam, nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		req.AddRawData(raw[4:]) // past the netfilter header, which the request has
		if _, err := req.Execute(unix.NETLINK_NETFILTER, 0); err == nil {
			n++
		} else if !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete an entry: %w", err))
		}
	}
	return n, errors.Join(errs...)
}

func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("conntrack: %s: %w", what, err)
}

// Port is a transport port of one IP family.
type Port struct {
	// Proto is the IP protocol number (17 for UDP).
	Proto uint8
	Port  uint16
	IPv6  bool
}

// ForgetPorts deletes, in the network namespace of the calling thread,
// every conntrack entry of a flow sent to one of ports, whatever the
// addresses: a UDP client that keeps sending to a host port keeps its
// entry alive, and with it the forward (or the lack of one) it was made
// under, so a mapping added would never apply to it. As Forget, it dumps
// nothing from an empty table, the table once per family filtered here
// when it is small, and else once per port filtered by the kernel (by
// protocol and port, which the kernel filters right for IPv6 too); where
// the kernel cannot filter, a big table is left alone.
func ForgetPorts(ports []Port) (int, error) {
	if len(ports) == 0 {
		return 0, nil
	}
	count, known := entries()
	if known && count == 0 {
		return 0, nil
	}
	if known && count <= smallTable {
		return forgetPortsByDump(ports)
	}
	n := 0
	var errs []error
	for _, p := range ports {
		fam := uint8(unix.AF_INET)
		if p.IPv6 {
			fam = unix.AF_INET6
		}
		req := newRequest(fam, nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
		tuple := nl.NewRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_ORIG, nil)
		proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
		proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{p.Proto})
		proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, nl.BEUint16Attr(p.Port))
		req.AddData(tuple)
		filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
		filter.AddRtAttr(ctaFilterOrigFlags, nl.Uint32Attr(filterFlagProto|filterFlagDstPort))
		req.AddData(filter)
		raws, err := req.Execute(unix.NETLINK_NETFILTER, 0)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			continue // a kernel without CTA_FILTER
		}
		if err != nil {
			errs = append(errs, wrap(fmt.Sprintf("list flows to port %d", p.Port), err))
			continue
		}
		d, err := deleteAll(fam, raws)
		n += d
		errs = append(errs, wrap(fmt.Sprintf("port %d", p.Port), err))
	}
	return n, errors.Join(errs...)
}

// forgetPortsByDump is ForgetPorts with one dump of the whole table.
func forgetPortsByDump(ports []Port) (int, error) {
	return deleteMatching("delete flows to host ports", unix.AF_UNSPEC, func(e entry) bool {
		return slices.ContainsFunc(ports, func(p Port) bool {
			fam := uint8(unix.AF_INET)
			if p.IPv6 {
				fam = unix.AF_INET6
			}
			return e.family == fam && e.proto == p.Proto && e.origDstPort == p.Port
		})
	})
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func newRequest(fam uint8, op, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(netlink.ConntrackTable<<8|op, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: fam, Version: nl.NFNETLINK_V0})
	return req
}

// dump asks the kernel for the entries whose side s is a, filtered there.
func dump(a netip.Addr, s side) ([][]byte, error) {
	req := newRequest(family(a), nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	attr := map[bool]int{true: nl.CTA_IP_V4_SRC, false: nl.CTA_IP_V4_DST}[s.src]
	if a.Is6() {
		attr = map[bool]int{true: nl.CTA_IP_V6_SRC, false: nl.CTA_IP_V6_DST}[s.src]
	}
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|s.tuple, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	ip.AddRtAttr(attr, a.AsSlice())
	req.AddData(tuple)
	flag, which := uint32(filterFlagIPDst), ctaFilterReplFlags
	if s.src {
		flag = filterFlagIPSrc
	}
	if s.tuple == nl.CTA_TUPLE_ORIG {
		which = ctaFilterOrigFlags
	}
	filter := nl.NewRtAttr(unix.NLA_F_NESTED|ctaFilter, nil)
	filter.AddRtAttr(which, nl.Uint32Attr(flag))
	req.AddData(filter)
	return req.Execute(unix.NETLINK_NETFILTER, 0)
}

// forgetInUserSpace is Forget of one side of one address where the kernel
// cannot filter: the library dumps the whole table.
func forgetInUserSpace(a netip.Addr, s side) (int, error) {
	f := &netlink.ConntrackFilter{}
	var typ netlink.ConntrackFilterType = netlink.ConntrackOrigSrcIP
	if s.tuple == nl.CTA_TUPLE_REPLY {
		typ = netlink.ConntrackReplySrcIP
	}
	if err := f.AddIP(typ, net.IP(a.AsSlice())); err != nil {
		return 0, err
	}
	n, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, netlink.InetFamily(family(a)), f)
	if err != nil {
		return int(n), fmt.Errorf("conntrack: delete entries of %s: %w", a, err)
	}
	return int(n), nil
}
