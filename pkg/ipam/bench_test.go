package ipam

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/allocator"
	"github.com/containernetworking/plugins/plugins/ipam/host-local/backend/disk"
)

// populate fills a /16 store with n live reservations, as n containers
// would, by writing host-local files directly (the next call indexes them).
func populate(b *testing.B, n int) *Config {
	b.Helper()
	dataDir := filepath.Join(b.TempDir(), "data")
	c, errs := Parse([]byte(confJSON(dataDir, `"subnet":"10.20.0.0/16"`)), "")
	if len(errs) > 0 {
		b.Fatal(errs)
	}
	if err := os.MkdirAll(c.Dir(), 0o700); err != nil {
		b.Fatal(err)
	}
	a := netip.MustParseAddr("10.20.0.2")
	for i := range n {
		body := fmt.Sprintf("live-%d\r\neth0", i)
		if err := os.WriteFile(filepath.Join(c.Dir(), a.String()), []byte(body), 0o600); err != nil {
			b.Fatal(err)
		}
		if i == n-1 { // the cursor where those allocations left it
			if err := os.WriteFile(filepath.Join(c.Dir(), "last_reserved_ip.0"), []byte(a.String()), 0o600); err != nil {
				b.Fatal(err)
			}
		}
		a = a.Next()
	}
	// One call to index them, outside the timing.
	if _, err := c.Leases(Owner{"warm", "eth0"}); err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkAllocateRelease is one ADD's allocation plus one DEL's release
// against a store already holding N live reservations. The cost must stay
// flat as N grows: nothing scans the store.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, n := range []int{10, 1000, 60000} {
		b.Run(fmt.Sprintf("live=%d", n), func(b *testing.B) {
			c := populate(b, n)
			b.ResetTimer()
			i := 0
			for b.Loop() {
				o := Owner{fmt.Sprintf("bench-%d", i), "eth0"}
				i++
				if _, err := c.Allocate(o); err != nil {
					b.Fatal(err)
				}
				if err := c.Release(o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStatus is the STATUS poll against a store with N reservations.
func BenchmarkStatus(b *testing.B) {
	for _, n := range []int{10, 60000} {
		b.Run(fmt.Sprintf("live=%d", n), func(b *testing.B) {
			c := populate(b, n)
			for b.Loop() {
				if err := c.Status(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReferenceAllocateRelease is the same work done by the reference
// host-local's own allocator and disk store (imported from
// containernetworking/plugins, v1.10.0), in-process like ours: the
// yardstick. Its release and duplicate check read every reservation file.
func BenchmarkReferenceAllocateRelease(b *testing.B) {
	for _, n := range []int{10, 1000, 60000} {
		b.Run(fmt.Sprintf("live=%d", n), func(b *testing.B) {
			c := populate(b, n)
			st, err := disk.New(c.Network, c.DataDir)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			_, subnet, _ := net.ParseCIDR("10.20.0.0/16")
			rs := allocator.RangeSet{{Subnet: types.IPNet(*subnet)}}
			if err := rs.Canonicalize(); err != nil {
				b.Fatal(err)
			}
			a := allocator.NewIPAllocator(&rs, st, 0)
			b.ResetTimer()
			i := 0
			for b.Loop() {
				id := fmt.Sprintf("bench-%d", i)
				i++
				if _, err := a.Get(id, "eth0", nil); err != nil {
					b.Fatal(err)
				}
				if err := a.Release(id, "eth0"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
