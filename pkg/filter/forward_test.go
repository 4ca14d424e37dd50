package filter

import (
	"errors"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// TestForward: a network's accept rules are made, found in place, checked,
// and removed, in both families; STATUS's question sees a DROP policy
// that nothing accepts the network through.
func TestForward(t *testing.T) {
	sb := nstest.NewT(t)
	s := ForwardSpec{Network: "net", Subnets: []netip.Prefix{netip.MustParsePrefix("10.7.0.0/24"), netip.MustParsePrefix("fd07::/64")}}
	run := func(fn func() error) {
		t.Helper()
		if err := sb.Host.Do(fn); err != nil {
			t.Fatal(err)
		}
	}
	state := func() string {
		var b strings.Builder
		_ = sb.Host.Do(func() error {
			for _, c := range []string{"iptables", "ip6tables"} {
				out, _ := exec.Command(c, "-S").CombinedOutput()
				b.Write(out)
			}
			return nil
		})
		return b.String()
	}
	// Docker's policy.
	run(func() error {
		for _, c := range []string{"iptables", "ip6tables"} {
			if out, err := exec.Command(c, "-P", "FORWARD", "DROP").CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", c, err, out)
			}
		}
		return nil
	})
	var blocked string
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets); return err })
	if !strings.Contains(blocked, "FORWARD policy is DROP") || !strings.Contains(blocked, "10.7.0.0/24") {
		t.Fatalf("blocked = %q", blocked)
	}
	run(func() error { return EnsureForward(s) })
	st := state()
	for _, want := range []string{`-A FORWARD -m comment --comment "netns-cni:net" -j ` + ForwardChain("net"),
		"-s 10.7.0.0/24 -j ACCEPT", "-d 10.7.0.0/24 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-s fd07::/64 -j ACCEPT"} {
		if !strings.Contains(st, want) {
			t.Fatalf("rules lack %q:\n%s", want, st)
		}
	}
	run(func() error { return CheckForward(s) })
	run(func() error {
		for _, f := range families {
			if !inPlace(f, s) {
				t.Errorf("%s: the rules in place are not seen over netlink", f.cmd)
			}
		}
		return nil
	})
	// The operator changes the subnet (one off a byte boundary, whose
	// match iptables-nft writes with a mask): the new subnet's rules join
	// the old ones, whose pods still run.
	edited := ForwardSpec{Network: "net", Subnets: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/23"), netip.MustParsePrefix("fd08::/64")}}
	run(func() error {
		for _, f := range families {
			if inPlace(f, edited) {
				t.Errorf("%s: the edited subnets are seen in place before any rule of theirs exists", f.cmd)
			}
		}
		return EnsureForward(edited)
	})
	run(func() error { return errors.Join(CheckForward(s), CheckForward(edited)) })
	run(func() error {
		for _, f := range families {
			if !inPlace(f, edited) || !inPlace(f, s) {
				t.Errorf("%s: old and new subnets' rules not both seen over netlink", f.cmd)
			}
		}
		for _, other := range []string{"10.7.0.0/25", "10.9.0.0/24", "10.8.0.0/24", "fd07::/96"} {
			if o := (ForwardSpec{Network: "net", Subnets: []netip.Prefix{netip.MustParsePrefix(other)}}); inPlace(families[0], o) && inPlace(families[1], o) {
				t.Errorf("%s seen in place", other)
			}
		}
		return nil
	})
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets); return err })
	if blocked != "" {
		t.Fatalf("blocked with the accept rules in place: %q", blocked)
	}
	run(func() error { return EnsureForward(s) }) // again: nothing doubled
	if st := state(); strings.Count(st, "-j "+ForwardChain("net")) != 2 || strings.Count(st, "-s 10.7.0.0/24 -j ACCEPT") != 1 {
		t.Fatalf("jumps doubled:\n%s", state())
	}
	run(func() error { return RemoveForward("net") })
	if strings.Contains(state(), ForwardChain("net")) {
		t.Fatalf("left:\n%s", state())
	}
	run(func() error { return RemoveForward("net") })
	if err := sb.Host.Do(func() error { return CheckForward(s) }); err == nil {
		t.Fatal("CHECK passed without the rules")
	}
}
