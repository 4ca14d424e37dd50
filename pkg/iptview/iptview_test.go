package iptview

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func TestLacks(t *testing.T) {
	nstest.NeedCommand(t, "iptables-nft", "make deps")
	for _, tc := range []struct {
		name   string
		before []string // run first: a legacy table loaded by someone else
	}{
		{"nft", nil},
		{"nft beside legacy tables", []string{"iptables-legacy", "-t", "nat", "-N", "Y-CHAIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb := nstest.NewT(t)
			err := sb.Host.Do(func() error {
				if tc.before != nil {
					nstest.NeedCommand(t, tc.before[0], "make deps")
					if out, err := exec.Command(tc.before[0], tc.before[1:]...).CombinedOutput(); err != nil {
						t.Fatalf("%v: %v %s", tc.before, err, out)
					}
				}
				x := func(table, chain string) bool { return table == "nat" && chain == "X-CHAIN" }
				if !NFTBased(iptables.ProtocolIPv4) {
					// The binary netns-cni execs is iptables-legacy: with a
					// legacy table loaded, netlink cannot tell.
					if tc.before != nil && Lacks(nftables.TableFamilyIPv4, x) {
						t.Error("legacy iptables with its tables loaded, yet netlink was trusted")
					}
					return nil
				}
				// The binary netns-cni execs is iptables-nft: its chains are
				// read over netlink, whatever legacy tables are loaded.
				if !Lacks(nftables.TableFamilyIPv4, x) {
					t.Error("cannot tell the chain is missing")
				}
				if out, err := exec.Command("iptables-nft", "-t", "nat", "-N", "X-CHAIN").CombinedOutput(); err != nil {
					t.Fatalf("iptables-nft: %v %s", err, out)
				}
				if Lacks(nftables.TableFamilyIPv4, x) {
					t.Error("reports X-CHAIN missing though it is there")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestRestore: lines are applied in one exec, arguments with blanks and
// quotes intact; a failing line leaves the table as it was.
func TestRestore(t *testing.T) {
	nstest.NeedCommand(t, "iptables-restore", "make deps")
	if got := line("-A", "C", "-m", "comment", "--comment", `a "b" c\`, ""); got != `-A C -m comment --comment "a \"b\" c\\" ""` {
		t.Fatalf("line: %s", got)
	}
	sb := nstest.NewT(t)
	err := sb.Host.Do(func() error {
		p := iptables.ProtocolIPv4
		var b Batch
		b.Add("filter", ":T-CHAIN", "-", "[0:0]")
		b.Add("filter", "-A", "T-CHAIN", "-m", "comment", "--comment", "two words", "-j", "ACCEPT")
		if err := b.Restore(p); err != nil {
			t.Fatal(err)
		}
		out, _ := exec.Command("iptables", "-S", "T-CHAIN").CombinedOutput()
		if want := `-A T-CHAIN -m comment --comment "two words" -j ACCEPT`; !strings.Contains(string(out), want) {
			t.Fatalf("after Restore:\n%s\nwant %s", out, want)
		}
		var failing Batch
		failing.Add("filter", "-F", "T-CHAIN")
		failing.Add("filter", "-D", "FORWARD", "-j", "NO-SUCH-CHAIN")
		err := failing.Restore(p)
		if err == nil || !strings.Contains(err.Error(), "iptables-restore") {
			t.Fatalf("a failing line: %v", err)
		}
		if out, _ := exec.Command("iptables", "-S", "T-CHAIN").CombinedOutput(); !strings.Contains(string(out), "two words") {
			t.Fatalf("a failed restore changed the table:\n%s", out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
