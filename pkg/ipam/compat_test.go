package ipam

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// refHostLocal is the reference plugin from Debian's
// containernetworking-plugins; `make deps` installs it.
const refHostLocal = "/usr/lib/cni/host-local"

// ref runs the reference host-local with a verb for an owner and returns
// the addresses of its result.
func ref(t *testing.T, cfg, verb string, o Owner) ([]string, error) {
	t.Helper()
	cmd := exec.Command(refHostLocal)
	cmd.Env = []string{"CNI_COMMAND=" + verb, "CNI_CONTAINERID=" + o.ID, "CNI_IFNAME=" + o.IfName,
		"CNI_NETNS=/nonexistent", "CNI_PATH=/usr/lib/cni"}
	cmd.Stdin = strings.NewReader(cfg)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return nil, &refError{out.String()}
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	_ = json.Unmarshal(out.Bytes(), &res)
	var addrs []string
	for _, ip := range res.IPs {
		addrs = append(addrs, ip.Address)
	}
	return addrs, nil
}

type refError struct{ out string }

func (e *refError) Error() string { return "reference host-local: " + e.out }

func needRef(t *testing.T) {
	t.Helper()
	nstest.NeedFile(t, refHostLocal, "make deps")
}

// TestCompatibleWithReferenceHostLocal switches a store between the
// reference plugin and ours, both ways, and checks that no live
// reservation is lost or handed out twice.
func TestCompatibleWithReferenceHostLocal(t *testing.T) {
	needRef(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	// Debian's reference plugins (1.1.1) speak up to cniVersion 1.0.0.
	cfg := strings.Replace(confJSON(dataDir, `"ranges":[[{"subnet":"10.1.0.0/28"}],[{"subnet":"fd00::/124"}]]`), "1.1.0", "1.0.0", 1)
	c, _ := Parse([]byte(cfg), "")
	r1, r2 := Owner{"ref-1", "eth0"}, Owner{"ref-2", "eth0"}
	o1, o2 := Owner{"ours-1", "eth0"}, Owner{"ours-2", "eth0"}

	// The reference starts the store.
	got1, err := ref(t, cfg, "ADD", r1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ref(t, cfg, "ADD", r2); err != nil {
		t.Fatal(err)
	}
	// Ours reads it: finds the reference's reservations by owner...
	ls, err := c.Leases(r1)
	if err != nil || len(ls) != 2 || ls[0].Address.String() != got1[0] {
		t.Fatalf("our view of %s: %+v %v (reference gave %v)", r1, ls, err, got1)
	}
	// ...continues its round-robin instead of starting over...
	if got := addrsOf(alloc(t, c, o1)); !slices.Equal(got, []string{"10.1.0.4/28", "fd00::4/124"}) {
		t.Fatalf("ours after reference: %v, want the next addresses 10.1.0.4 and fd00::4", got)
	}
	// ...and releases a reference reservation by owner.
	if err := c.Release(r1); err != nil {
		t.Fatal(err)
	}
	alloc(t, c, o2)

	// Back to the reference: it sees our reservations (a repeated ADD of
	// ours is a duplicate to it), skips them, and releases them by owner.
	if _, err := ref(t, cfg, "ADD", o1); err == nil || !strings.Contains(err.Error(), "duplicate allocation") {
		t.Fatalf("reference ADD of an owner we reserved for: %v", err)
	}
	got3, err := ref(t, cfg, "ADD", Owner{"ref-3", "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got3, []string{"10.1.0.6/28", "fd00::6/124"}) {
		t.Fatalf("reference after ours: %v, want 10.1.0.6 and fd00::6 (after our cursor)", got3)
	}
	if _, err := ref(t, cfg, "DEL", o1); err != nil {
		t.Fatal(err)
	}

	// And ours again: it notices the reference's changes (o1 gone, ref-3
	// new) without being told.
	if ls, _ := c.Leases(o1); len(ls) != 0 {
		t.Fatalf("o1 still held after the reference released it: %v", ls)
	}
	if ls, _ := c.Leases(Owner{"ref-3", "eth0"}); len(ls) != 2 {
		t.Fatalf("ref-3 not found: %v", ls)
	}
	want := map[string]string{
		"10.1.0.3": "ref-2\r\neth0", "fd00::3": "ref-2\r\neth0",
		"10.1.0.5": "ours-2\r\neth0", "fd00::5": "ours-2\r\neth0",
		"10.1.0.6": "ref-3\r\neth0", "fd00::6": "ref-3\r\neth0",
	}
	if got := reservations(t, c); !mapsEqual(got, want) {
		t.Fatalf("store %q, want %q", got, want)
	}
	for _, o := range []Owner{r2, o2, {"ref-3", "eth0"}} {
		if err := c.Release(o); err != nil {
			t.Fatal(err)
		}
	}
	if left := storeFiles(t, c); len(left) != 0 {
		t.Fatalf("left: %v", left)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestReferenceBroadcastAddressKept: the reference hands out an IPv4
// broadcast address when rangeEnd names it; ours narrows such a range
// (Parse), but the pod that got the address from the reference keeps it:
// CHECK finds it reserved and a repeated ADD returns it, not a second one.
func TestReferenceBroadcastAddressKept(t *testing.T) {
	needRef(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := strings.Replace(confJSON(dataDir, `"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.254","rangeEnd":"10.1.0.255"}]]`), "1.1.0", "1.0.0", 1)
	c, errs := Parse([]byte(cfg), "")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	r1, r2 := Owner{"ref-1", "eth0"}, Owner{"ref-2", "eth0"}
	if _, err := ref(t, cfg, "ADD", r1); err != nil {
		t.Fatal(err)
	}
	if got, err := ref(t, cfg, "ADD", r2); err != nil || !slices.Equal(got, []string{"10.1.0.255/24"}) {
		t.Fatalf("the reference gave %s %v, %v; want 10.1.0.255/24", r2, got, err)
	}
	if err := c.Check(r2, []netip.Addr{netip.MustParseAddr("10.1.0.255")}); err != nil {
		t.Fatalf("CHECK of the reference's broadcast address: %v", err)
	}
	ls := alloc(t, c, r2)
	if got := addrsOf(ls); !slices.Equal(got, []string{"10.1.0.255/24"}) {
		t.Fatalf("repeated ADD of %s: %v, want the address it holds, 10.1.0.255/24", r2, got)
	}
	if res := reservations(t, c); len(res) != 2 {
		t.Fatalf("reservations %v, want the reference's two", res)
	}
}
