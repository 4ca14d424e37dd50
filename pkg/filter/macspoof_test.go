package filter

import (
	"errors"
	"net"
	"testing"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestSpoofChecks adds, finds and removes per-port rules in a sandbox
// host; the table goes with its last rule.
func TestSpoofChecks(t *testing.T) {
	sb := nstest.NewT(t)
	mac, _ := net.ParseMAC("02:00:00:00:00:01")
	has := func(port string) bool {
		t.Helper()
		var ok bool
		if err := sb.Host.Do(func() (err error) { ok, err = HasSpoofCheck("net", port); return err }); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	tableExists := func() bool {
		t.Helper()
		var found bool
		err := sb.Host.Do(func() error {
			conn, err := nftables.New()
			if err != nil {
				return err
			}
			_, err = conn.ListTableOfFamily(tableName("net"), nftables.TableFamilyBridge)
			found = err == nil
			if err != nil && !errors.Is(err, unix.ENOENT) {
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	run := func(fn func() error) {
		t.Helper()
		if err := sb.Host.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"p1", "p2", "p3"} {
		run(func() error { return AddSpoofCheck("net", p, mac) })
	}
	if !has("p1") || !has("p2") || has("p4") {
		t.Fatal("rules not found as added")
	}
	run(func() error { return RemoveSpoofCheck("net", "p1") })
	run(func() error { return RemoveSpoofCheck("net", "p1") }) // gone already: fine
	if has("p1") || !has("p2") {
		t.Fatal("removing p1 touched the wrong rules")
	}
	run(func() error { return RemoveSpoofChecksExcept("net", map[string]bool{"p3": true}) })
	if has("p2") || !has("p3") || !tableExists() {
		t.Fatal("GC removed the wrong rules")
	}
	run(func() error { return RemoveSpoofCheck("net", "p3") })
	if tableExists() {
		t.Fatal("table left after its last rule")
	}
}
