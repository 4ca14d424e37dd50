package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// conf makes a host-local config over a fresh temporary dataDir.
func conf(t testing.TB, ipam string) *Config {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	c := mustParse(t, fmt.Sprintf(`{"cniVersion":"1.1.0","name":"net","ipam":{"type":"host-local","dataDir":%q,%s}}`, dir, ipam), "")
	c.LockTimeout = 2 * time.Second
	return c
}

func addrsOf(ls []Lease) []string {
	var s []string
	for _, l := range ls {
		s = append(s, l.Address.String())
	}
	return s
}

func alloc(t testing.TB, c *Config, o Owner) []Lease {
	t.Helper()
	ls, err := c.Allocate(o)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", o, err)
	}
	return ls
}

// reservations lists the reservation files in the store with their bodies.
func reservations(t testing.TB, c *Config) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(c.Dir())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.Dir(), e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

func TestAllocateRoundRobinAndOnDiskFormat(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/29"`)
	a := Owner{"ctr-a", "eth0"}
	b := Owner{"ctr-b", "eth0"}
	if got := addrsOf(alloc(t, c, a)); !slices.Equal(got, []string{"10.1.0.2/29"}) {
		t.Fatalf("first address %v, want 10.1.0.2/29 (the gateway .1 is never handed out)", got)
	}
	lb := alloc(t, c, b)
	if got := addrsOf(lb); !slices.Equal(got, []string{"10.1.0.3/29"}) || lb[0].Gateway.String() != "10.1.0.1" || !lb[0].New {
		t.Fatalf("second lease %+v", lb)
	}
	if err := c.Release(a); err != nil {
		t.Fatal(err)
	}
	// The freed .2 is not reused at once: round-robin goes on from the cursor.
	if got := addrsOf(alloc(t, c, Owner{"ctr-c", "eth0"})); !slices.Equal(got, []string{"10.1.0.4/29"}) {
		t.Fatalf("after release got %v, want 10.1.0.4/29", got)
	}

	// host-local's format, byte for byte.
	res := reservations(t, c)
	if res["10.1.0.3"] != "ctr-b\r\neth0" || res["10.1.0.4"] != "ctr-c\r\neth0" || len(res) != 2 {
		t.Fatalf("reservation files %q", res)
	}
	cur, err := os.ReadFile(filepath.Join(c.Dir(), "last_reserved_ip.0"))
	if err != nil || string(cur) != "10.1.0.4" {
		t.Fatalf("cursor %q %v", cur, err)
	}
	for _, name := range []string{"10.1.0.3", "last_reserved_ip.0", "lock"} {
		st, err := os.Stat(filepath.Join(c.Dir(), name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v err %v, want 0600", name, st.Mode(), err)
		}
	}
	for _, d := range []string{c.DataDir, c.Dir()} {
		if st, _ := os.Stat(d); st.Mode().Perm()&0o077 != 0 {
			t.Fatalf("%s created with mode %v, want 0700", d, st.Mode().Perm())
		}
	}
}

func TestAllocateIsIdempotent(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`)
	o := Owner{"ctr", "eth0"}
	first := alloc(t, c, o)
	again := alloc(t, c, o)
	if !slices.Equal(addrsOf(first), addrsOf(again)) || len(first) != 2 {
		t.Fatalf("repeated ADD: %v then %v", addrsOf(first), addrsOf(again))
	}
	if !first[0].New || again[0].New || again[1].New {
		t.Fatalf("New flags: first %+v again %+v", first, again)
	}
	// The same container with another interface is another owner.
	other := alloc(t, c, Owner{"ctr", "net1"})
	if slices.Equal(addrsOf(other), addrsOf(first)) {
		t.Fatal("second interface got the first interface's addresses")
	}
	if len(reservations(t, c)) != 4 {
		t.Fatalf("reservations %v", reservations(t, c))
	}
}

func TestRequestedAddresses(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	c.Requested = []netip.Addr{netip.MustParseAddr("10.1.0.50")}
	if got := addrsOf(alloc(t, c, Owner{"a", "eth0"})); !slices.Equal(got, []string{"10.1.0.50/24"}) {
		t.Fatalf("requested: %v", got)
	}
	// Same owner, same request: idempotent.
	alloc(t, c, Owner{"a", "eth0"})
	_, err := c.Allocate(Owner{"b", "eth0"})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "held by a/eth0") {
		t.Fatalf("taken request: %v", err)
	}
	if len(reservations(t, c)) != 1 {
		t.Fatal("failed request left a reservation")
	}
	c.Requested = []netip.Addr{netip.MustParseAddr("10.1.0.51")}
	if _, err := c.Allocate(Owner{"a", "eth0"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("owner asking for a second address: %v", err)
	}
}

func TestExhaustionNamesTheRangeAndRollsBack(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.2.0.0/30"}]]`)
	alloc(t, c, Owner{"a", "eth0"})
	_, err := c.Allocate(Owner{"b", "eth0"})
	if !errors.Is(err, ErrExhausted) || !strings.Contains(err.Error(), "10.2.0.1-10.2.0.2") {
		t.Fatalf("exhausted: %v", err)
	}
	// b's address from the first set must not stay reserved.
	if res := reservations(t, c); len(res) != 2 {
		t.Fatalf("failed allocation left %v", res)
	}
	if err := c.Status(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Status on a full pool: %v", err)
	}
	if err := c.Release(Owner{"a", "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Status(); err != nil {
		t.Fatalf("Status after release: %v", err)
	}
}

func TestReleaseAddrsKeepsEarlierLeases(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`)
	o := Owner{"a", "eth0"}
	first := alloc(t, c, o)
	if err := c.ReleaseAddrs(o, []netip.Addr{first[1].Address.Addr()}); err != nil {
		t.Fatal(err)
	}
	ls, err := c.Leases(o)
	if err != nil || len(ls) != 1 || ls[0].Address != first[0].Address {
		t.Fatalf("after partial release: %+v %v", ls, err)
	}
	// Releasing what another owner holds does nothing.
	if err := c.ReleaseAddrs(Owner{"b", "eth0"}, []netip.Addr{first[0].Address.Addr()}); err != nil {
		t.Fatal(err)
	}
	if len(reservations(t, c)) != 1 {
		t.Fatal("released another owner's address")
	}
	// DEL twice is fine.
	for range 2 {
		if err := c.Release(o); err != nil {
			t.Fatal(err)
		}
	}
	if len(reservations(t, c)) != 0 {
		t.Fatal("release left reservations")
	}
}

func TestCheck(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	o := Owner{"a", "eth0"}
	l := alloc(t, c, o)
	if err := c.Check(o, []netip.Addr{l[0].Address.Addr()}); err != nil {
		t.Fatal(err)
	}
	if err := c.Check(o, []netip.Addr{netip.MustParseAddr("10.1.0.77")}); err == nil || !strings.Contains(err.Error(), "10.1.0.77 is not reserved") {
		t.Fatalf("wrong address: %v", err)
	}
	_ = c.Release(o)
	if err := c.Check(o, []netip.Addr{l[0].Address.Addr()}); err == nil {
		t.Fatal("Check passed after release")
	}
}

// Reservations written behind our back — by the reference host-local, or a
// legacy id-only file — are found by owner all the same.
func TestForeignAndLegacyReservations(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	alloc(t, c, Owner{"ours", "eth0"})
	if err := os.WriteFile(filepath.Join(c.Dir(), "10.1.0.100"), []byte("foreign\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir(), "10.1.0.101"), []byte("legacy"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls, err := c.Leases(Owner{"foreign", "eth0"})
	if err != nil || len(ls) != 1 || ls[0].Address.Addr().String() != "10.1.0.100" {
		t.Fatalf("foreign lease: %+v %v", ls, err)
	}
	// A repeated ADD of the foreign owner returns its address.
	if got := addrsOf(alloc(t, c, Owner{"foreign", "eth0"})); !slices.Equal(got, []string{"10.1.0.100/24"}) {
		t.Fatalf("foreign re-ADD: %v", got)
	}
	if err := c.Release(Owner{"legacy", "eth0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Release(Owner{"foreign", "eth0"}); err != nil {
		t.Fatal(err)
	}
	res := reservations(t, c)
	if len(res) != 1 || res["10.1.0.2"] != "ours\r\neth0" {
		t.Fatalf("left %v", res)
	}
}

func TestSymlinksAreNeverFollowed(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/29"`)
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(c.Dir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(c.Dir(), "10.1.0.2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(c.Dir(), "last_reserved_ip.0")); err != nil {
		t.Fatal(err)
	}
	got := addrsOf(alloc(t, c, Owner{"a", "eth0"}))
	if slices.Equal(got, []string{"10.1.0.2/29"}) {
		t.Fatal("handed out an address whose file is a planted symlink")
	}
	_ = c.Release(Owner{"a", "eth0"})
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("symlink target changed: %q", b)
	}

	// The network directory itself a symlink: refused.
	c2 := conf(t, `"subnet":"10.1.0.0/29"`)
	if err := os.MkdirAll(c2.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), c2.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Allocate(Owner{"a", "eth0"}); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("symlinked store dir: %v", err)
	}
}

func TestBusyStoreTimesOut(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	alloc(t, c, Owner{"a", "eth0"})
	fd, err := unix.Open(filepath.Join(c.Dir(), "lock"), unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	c.LockTimeout = 150 * time.Millisecond
	start := time.Now()
	_, err = c.Allocate(Owner{"b", "eth0"})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Allocate under a held lock: %v", err)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Fatalf("waited %v for a 150ms timeout", waited)
	}
	_ = unix.Flock(fd, unix.LOCK_UN)
	alloc(t, c, Owner{"b", "eth0"})
}

func TestGC(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"fd00::/120"}]]`)
	for _, id := range []string{"a", "b", "c"} {
		alloc(t, c, Owner{id, "eth0"})
	}
	if err := os.WriteFile(filepath.Join(c.Dir(), "10.1.0.200"), []byte("legacy-keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	released, err := c.GC([]Owner{{"b", "eth0"}, {"legacy-keep", "eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	res := reservations(t, c)
	var owners []string
	for _, body := range res {
		owners = append(owners, body)
	}
	slices.Sort(owners)
	if !slices.Equal(owners, []string{"b\r\neth0", "b\r\neth0", "legacy-keep"}) {
		t.Fatalf("after GC: %q", owners)
	}
	if ls, _ := c.Leases(Owner{"a", "eth0"}); len(ls) != 0 {
		t.Fatalf("a still indexed: %v", ls)
	}
	if len(released) != 2 || len(released[Owner{"a", "eth0"}]) != 2 || len(released[Owner{"c", "eth0"}]) != 2 {
		t.Fatalf("released %v, want a's and c's two addresses each", released)
	}
	if _, err := c.GC(nil); err != nil {
		t.Fatal(err)
	}
	if res := reservations(t, c); len(res) != 0 {
		t.Fatalf("empty valid list kept %v", res)
	}
	for _, keep := range []string{"lock", "last_reserved_ip.0", "last_reserved_ip.1"} {
		if _, err := os.Stat(filepath.Join(c.Dir(), keep)); err != nil {
			t.Fatalf("GC removed %s: %v", keep, err)
		}
	}
}

func TestRebootReclaimsOldReservations(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	defer func(old func() (string, time.Time)) { clock = old }(clock)
	clock = func() (string, time.Time) { return "boot-1", time.Now().Add(-time.Hour) }
	alloc(t, c, Owner{"before-reboot", "eth0"})
	alloc(t, c, Owner{"also-before", "eth0"})

	// The machine reboots: a new boot id, booted a moment ago.
	bootTime := time.Now().Add(time.Second)
	clock = func() (string, time.Time) { return "boot-2", bootTime }
	// A reservation made after boot by someone else (mtime after boot time).
	after := filepath.Join(c.Dir(), "10.1.0.99")
	if err := os.WriteFile(after, []byte("after-reboot\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(after, bootTime.Add(time.Minute), bootTime.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	alloc(t, c, Owner{"new", "eth0"})
	res := reservations(t, c)
	if _, ok := res["10.1.0.99"]; !ok || len(res) != 2 {
		t.Fatalf("after reboot: %q, want only the post-boot reservations", res)
	}
	for _, body := range res {
		if strings.Contains(body, "before") {
			t.Fatalf("pre-boot reservation survived: %q", res)
		}
	}
}

func TestStatus(t *testing.T) {
	c := conf(t, `"subnet":"10.1.0.0/24"`)
	if err := c.Status(); err != nil {
		t.Fatalf("Status before any ADD: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipped: the read-only store check needs root to mount a read-only tmpfs")
	}
	ro := t.TempDir()
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, unix.MNT_DETACH) })
	c.DataDir = ro
	if err := c.Status(); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("Status on a read-only store: %v", err)
	}
}

// TestManyRangeSets: ten IPv6 range sets with long rangeStart values make
// a state record longer than one block; every ADD succeeds (it used to
// fail after reserving, "state record too long", and keep the
// reservations), and the record reads back.
func TestManyRangeSets(t *testing.T) {
	var sets []string
	for i := range 10 {
		sets = append(sets, fmt.Sprintf(`[{"subnet":"fd12:3456:789a:bc%02x::/64","rangeStart":"fd12:3456:789a:bc%02x:ffff:ffff:ffff:ff00"}]`, i, i))
	}
	c := conf(t, `"ranges":[`+strings.Join(sets, ",")+`]`)
	for i := range 3 {
		o := Owner{fmt.Sprintf("c%d", i), "eth0"}
		ls, err := c.Allocate(o)
		if err != nil || len(ls) != 10 {
			t.Fatalf("ADD %d: %v %v", i, ls, err)
		}
	}
	if got := len(reservations(t, c)); got != 30 {
		t.Fatalf("%d reservations, want 30", got)
	}
	if err := c.Release(Owner{"c1", "eth0"}); err != nil {
		t.Fatal(err)
	}
	if got := len(reservations(t, c)); got != 20 {
		t.Fatalf("%d reservations after a release, want 20", got)
	}
}

func TestHeldByOthers(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`)
	a, b := Owner{"a", "eth0"}, Owner{"b", "eth0"}
	if others, err := c.HeldByOthers(a); err != nil || others {
		t.Fatalf("empty store: %v %v", others, err)
	}
	alloc(t, c, a)
	if others, _ := c.HeldByOthers(a); others {
		t.Fatal("a's own reservation counted as another's")
	}
	if others, _ := c.HeldByOthers(b); !others {
		t.Fatal("a's reservation not seen from b")
	}
	alloc(t, c, b)
	if err := c.Release(b); err != nil {
		t.Fatal(err)
	}
	if others, _ := c.HeldByOthers(a); others {
		t.Fatal("b released, still counted")
	}
}

// TestHeldByOthersDuringRebuild: a GC (or any repair) rebuilds the owner
// index while DELs of the network ask it, without the lock, whether
// another attachment is left. It must never answer "no" while one is:
// that DEL would remove the network's rules from under live pods.
func TestHeldByOthersDuringRebuild(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`)
	a := Owner{"a", "eth0"}
	alloc(t, c, a)
	for i := range 20 {
		alloc(t, c, Owner{fmt.Sprintf("live%d", i), "eth0"})
	}
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if _, err := c.GCFunc(func(Owner) bool { return true }); err != nil {
				done <- err
				return
			}
		}
	}()
	misses := 0
	for range 20000 {
		if others, err := c.HeldByOthers(a); err != nil || !others {
			misses++
		}
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if misses > 0 {
		t.Fatalf("HeldByOthers said no other attachment is left %d times of 20000, with 20 live ones", misses)
	}
}

func TestHolder(t *testing.T) {
	c := conf(t, `"ranges":[[{"subnet":"10.1.0.0/24"}]]`)
	a := Owner{"a", "eth0"}
	addr := alloc(t, c, a)[0].Address.Addr()
	if o, ok, err := c.Holder(addr); err != nil || !ok || o != a {
		t.Fatalf("holder of %s: %v %v %v, want %v", addr, o, ok, err, a)
	}
	if err := c.Release(a); err != nil {
		t.Fatal(err)
	}
	if o, ok, err := c.Holder(addr); err != nil || ok {
		t.Fatalf("holder of released %s: %v %v %v", addr, o, ok, err)
	}
}
