package iptview

import (
	"os/exec"
	"testing"

	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func TestLacks(t *testing.T) {
	for _, tc := range []struct {
		name, cmd string
		create    []string
	}{
		{"nft", "iptables-nft", []string{"-t", "nat", "-N", "X-CHAIN"}},
		{"legacy", "iptables-legacy", []string{"-t", "nat", "-N", "Y-CHAIN"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nstest.NeedCommand(t, tc.cmd, "make deps")
			sb := nstest.NewT(t)
			err := sb.Host.Do(func() error {
				x := func(table, chain string) bool { return table == "nat" && chain == "X-CHAIN" }
				if !Lacks(nftables.TableFamilyIPv4, x) {
					t.Error("an empty namespace: cannot tell the chain is missing")
				}
				if out, err := exec.Command(tc.cmd, tc.create...).CombinedOutput(); err != nil {
					t.Fatalf("%s: %v %s", tc.cmd, err, out)
				}
				if Lacks(nftables.TableFamilyIPv4, x) {
					t.Error("reports X-CHAIN missing though it is there (or legacy tables are loaded)")
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
