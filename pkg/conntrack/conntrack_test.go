package conntrack

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// flow makes a UDP entry from src:sport to dst:53, replied to by
// replySrc to replyDst (a masqueraded flow has replyDst the host's).
func flow(src, dst, replySrc, replyDst string, sport uint16) *netlink.ConntrackFlow {
	fam := uint8(unix.AF_INET)
	if netip.MustParseAddr(src).Is6() {
		fam = unix.AF_INET6
	}
	ip := func(s string) net.IP { return net.IP(netip.MustParseAddr(s).AsSlice()) } // 4 bytes for IPv4
	return &netlink.ConntrackFlow{
		FamilyType: fam, TimeOut: 120,
		Forward: netlink.IPTuple{SrcIP: ip(src), DstIP: ip(dst), Protocol: unix.IPPROTO_UDP, SrcPort: sport, DstPort: 53},
		Reverse: netlink.IPTuple{SrcIP: ip(replySrc), DstIP: ip(replyDst), Protocol: unix.IPPROTO_UDP, SrcPort: 53, DstPort: sport},
	}
}

func create(t testing.TB, flows ...*netlink.ConntrackFlow) {
	t.Helper()
	for _, f := range flows {
		if err := netlink.ConntrackCreate(netlink.ConntrackTable, netlink.InetFamily(f.FamilyType), f); err != nil {
			t.Fatalf("create %v: %v", f, err)
		}
	}
}

func count(t testing.TB) int {
	t.Helper()
	n := 0
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		fs, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		n += len(fs)
	}
	return n
}

// sources lists the original sources of the table's entries, sorted.
func sources(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		fs, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fs {
			out = append(out, f.Forward.SrcIP.String())
		}
	}
	slices.Sort(out)
	return out
}

// forgetAll is Forget done by the library in user space, as on a kernel
// without CTA_FILTER.
func forgetAll(addrs []netip.Addr) (int, error) {
	n := 0
	for _, a := range addrs {
		for _, s := range sides {
			d, err := forgetInUserSpace(a, s)
			if err != nil {
				return n, err
			}
			n += d
		}
	}
	return n, nil
}

// TestForget: the entries of a released address go — flows it started,
// masqueraded or not, and flows it answered, straight or DNATed to it
// through a host port — and no other; filtered by the kernel, in user
// space from one dump (a small table), and by the per-address fallback
// for kernels that cannot filter.
func TestForget(t *testing.T) {
	for name, forget := range map[string]func([]netip.Addr) (int, error){
		"kernel-filtered": func(a []netip.Addr) (int, error) {
			defer func(n int) { smallTable = n }(smallTable)
			smallTable = -1
			return Forget(a)
		},
		"small-table": Forget,
		"user-space":  forgetAll,
	} {
		t.Run(name, func(t *testing.T) { testForget(t, forget) })
	}
}

func testForget(t *testing.T, Forget func([]netip.Addr) (int, error)) {
	sb := nstest.NewT(t)
	err := sb.Host.Do(func() error {
		create(t,
			flow("10.1.0.5", "192.0.2.9", "192.0.2.9", "10.1.0.5", 1000),   // started by it, not NATed
			flow("10.1.0.5", "192.0.2.9", "192.0.2.9", "192.0.2.1", 1001),  // started by it, masqueraded
			flow("192.0.2.7", "10.1.0.5", "10.1.0.5", "192.0.2.7", 1002),   // it answers
			flow("192.0.2.7", "192.0.2.1", "10.1.0.5", "192.0.2.7", 1006),  // it answers, through a host port
			flow("fd01::5", "2001:db8::9", "2001:db8::9", "fd01::5", 1003), // IPv6
			flow("10.1.0.6", "192.0.2.9", "192.0.2.9", "10.1.0.6", 1004),   // another container's
			flow("fd01::6", "2001:db8::9", "2001:db8::9", "fd01::6", 1005),
		)
		if got := count(t); got != 7 {
			return fmt.Errorf("%d entries planted, want 7", got)
		}
		n, err := Forget([]netip.Addr{netip.MustParseAddr("10.1.0.5"), netip.MustParseAddr("fd01::5")})
		if err != nil {
			return err
		}
		// Exactly the other container's two are left (a count alone would
		// not tell: the kernel's inverted IPv6 filter once deleted fd01::6's
		// and kept fd01::5's).
		if left := sources(t); n != 5 || !slices.Equal(left, []string{"10.1.0.6", "fd01::6"}) {
			return fmt.Errorf("deleted %d, left the flows of %v; want 5 deleted, the other container's left", n, left)
		}
		if n, err := Forget([]netip.Addr{netip.MustParseAddr("10.1.0.5")}); n != 0 || err != nil {
			return fmt.Errorf("again: %d %w", n, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestForgetPorts: the entries of flows sent to a port go, of that
// protocol and family only; filtered by the kernel and, in a small table,
// here.
func TestForgetPorts(t *testing.T) {
	for _, small := range []int{-1, smallTable} {
		t.Run(fmt.Sprint("smallTable=", small), func(t *testing.T) {
			defer func(n int) { smallTable = n }(smallTable)
			smallTable = small
			testForgetPorts(t)
		})
	}
}

func testForgetPorts(t *testing.T) {
	sb := nstest.NewT(t)
	to := func(proto uint8, dport uint16, f *netlink.ConntrackFlow) *netlink.ConntrackFlow {
		f.Forward.Protocol, f.Reverse.Protocol = proto, proto
		f.Forward.DstPort, f.Reverse.SrcPort = dport, dport
		if proto == unix.IPPROTO_TCP {
			f.ProtoInfo = &netlink.ProtoInfoTCP{State: 3} // established
		}
		return f
	}
	err := sb.Host.Do(func() error {
		create(t,
			to(unix.IPPROTO_UDP, 8080, flow("192.0.2.7", "192.0.2.1", "10.1.0.5", "192.0.2.7", 1000)),  // DNATed to a container
			to(unix.IPPROTO_UDP, 8080, flow("192.0.2.8", "192.0.2.1", "192.0.2.1", "192.0.2.8", 1001)), // before the mapping
			to(unix.IPPROTO_UDP, 8080, flow("2001:db8::7", "2001:db8::1", "fd01::5", "2001:db8::7", 1002)),
			to(unix.IPPROTO_UDP, 8081, flow("192.0.2.7", "192.0.2.1", "10.1.0.5", "192.0.2.7", 1003)), // another port
			to(unix.IPPROTO_TCP, 8080, flow("192.0.2.7", "192.0.2.1", "10.1.0.5", "192.0.2.7", 1004)), // TCP
		)
		n, err := ForgetPorts([]Port{{Proto: unix.IPPROTO_UDP, Port: 8080}, {Proto: unix.IPPROTO_UDP, Port: 8080, IPv6: true}})
		if err != nil {
			return err
		}
		if left := sources(t); n != 3 || !slices.Equal(left, []string{"192.0.2.7", "192.0.2.7"}) || count(t) != 2 {
			return fmt.Errorf("deleted %d, left %v; want 3 deleted, 2 left (port 8081, TCP)", n, left)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkForget: forget one address's 2 entries (a flow it started, one
// it answered) in a table of 10,000 unrelated ones, filtered by the kernel
// (what Forget does for IPv4 in a table this big) and by the library in
// user space (what it does for IPv6, and on kernels without CTA_FILTER).
func BenchmarkForget(b *testing.B) {
	sb := nstest.NewT(b)
	for _, mode := range []string{"kernel-filtered", "user-space"} {
		b.Run(mode, func(b *testing.B) {
			err := sb.Host.Do(func() error {
				_ = netlink.ConntrackTableFlush(netlink.ConntrackTable)
				for i := range 10000 {
					create(b, flow(fmt.Sprintf("10.2.%d.%d", i/250, i%250+1), "192.0.2.9", "192.0.2.9", "192.0.2.1", uint16(20000+i)))
				}
				target := netip.MustParseAddr("10.1.0.5")
				b.ResetTimer()
				for i := range b.N {
					b.StopTimer()
					create(b, flow("10.1.0.5", "192.0.2.9", "192.0.2.9", "192.0.2.1", uint16(3000+i%1000)),
						flow("192.0.2.7", "192.0.2.8", "10.1.0.5", "192.0.2.7", uint16(3000+i%1000))) // DNATed to it
					b.StartTimer()
					var n int
					var err error
					if mode == "kernel-filtered" {
						n, err = Forget([]netip.Addr{target})
					} else {
						n, err = forgetAll([]netip.Addr{target})
					}
					if err != nil || n != 2 {
						return fmt.Errorf("deleted %d: %w", n, err)
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
