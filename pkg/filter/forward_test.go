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
	veths := HostSide{Name: "vp", Prefix: true}
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets, veths); return err })
	if !strings.Contains(blocked, "FORWARD policy is DROP") || !strings.Contains(blocked, "10.7.0.0/24") {
		t.Fatalf("blocked = %q", blocked)
	}
	// Only FORWARD and the chains it reaches count: an accept in INPUT, or
	// in a chain nothing jumps to, lifts nothing; one in a chain FORWARD
	// reaches (through another) does.
	ipt := func(args ...string) {
		t.Helper()
		run(func() error {
			if out, err := exec.Command("iptables", args...).CombinedOutput(); err != nil {
				t.Fatalf("iptables %v: %v %s", args, err, out)
			}
			return nil
		})
	}
	ipt("-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT")
	ipt("-N", "OPERATOR-A")
	ipt("-N", "OPERATOR-B")
	ipt("-A", "OPERATOR-B", "-i", "vp+", "-j", "ACCEPT")
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets[:1], veths); return err })
	if blocked == "" {
		t.Fatal("an accept in INPUT or in a chain FORWARD does not reach counted as lifting the DROP policy")
	}
	ipt("-A", "FORWARD", "-j", "OPERATOR-A")
	ipt("-A", "OPERATOR-A", "-g", "OPERATOR-B")
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets[:1], veths); return err })
	if blocked != "" {
		t.Fatalf("an accept of vp+ in a chain FORWARD reaches not counted: %q", blocked)
	}
	for _, args := range [][]string{{"-D", "FORWARD", "-j", "OPERATOR-A"}, {"-F", "OPERATOR-A"}, {"-F", "OPERATOR-B"},
		{"-X", "OPERATOR-A"}, {"-X", "OPERATOR-B"}, {"-D", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"}} {
		ipt(args...)
	}
	// RHEL's iptables-services ruleset: policy ACCEPT, and a REJECT at the
	// end of FORWARD. It blocks the network just the same — unless a rule
	// before it may accept the traffic.
	ipt("-P", "FORWARD", "ACCEPT")
	ipt("-A", "FORWARD", "-j", "REJECT", "--reject-with", "icmp-host-prohibited")
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets[:1], veths); return err })
	if !strings.Contains(blocked, `rule "-A FORWARD -j REJECT --reject-with icmp-host-prohibited" drops 10.7.0.0/24`) {
		t.Fatalf("blocked = %q, want the REJECT rule named", blocked)
	}
	ipt("-I", "FORWARD", "-i", "vp+", "-j", "ACCEPT")
	run(func() (err error) { blocked, err = ForwardBlocked(s.Subnets[:1], veths); return err })
	if blocked != "" {
		t.Fatalf("an accept before the REJECT not counted: %q", blocked)
	}
	ipt("-F", "FORWARD")
	ipt("-P", "FORWARD", "DROP")
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
	run(func() (err error) {
		blocked, err = ForwardBlocked(s.Subnets, veths)
		return err
	})
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
	// Made in one exec for the network's first attachment; removed whole
	// also when an operator took the jumps out.
	run(func() error { return EnsureForward(s) })
	if st := state(); strings.Count(st, "-j "+ForwardChain("net")) != 2 || strings.Count(st, "-s 10.7.0.0/24 -j ACCEPT") != 1 || strings.Count(st, "-s fd07::/64 -j ACCEPT") != 1 {
		t.Fatalf("first attachment's rules:\n%s", st)
	}
	run(func() error {
		for _, c := range []string{"iptables", "ip6tables"} {
			if out, err := exec.Command(c, append([]string{"-D", "FORWARD"}, families[0].jump("net")...)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", c, err, out)
			}
		}
		return RemoveForward("net")
	})
	if strings.Contains(state(), ForwardChain("net")) {
		t.Fatalf("left after the jumps were taken out by hand:\n%s", state())
	}
	// A jump doubled (by hand, or by two writers of an older version)
	// kept the chain referenced after one delete: the last DEL failed once.
	run(func() error { return EnsureForward(s) })
	run(func() error {
		for _, f := range families {
			if out, err := exec.Command(f.cmd, append([]string{"-A", "FORWARD"}, f.jump("net")...)...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v %s", f.cmd, err, out)
			}
		}
		return RemoveForward("net")
	})
	if strings.Contains(state(), ForwardChain("net")) {
		t.Fatalf("left after removing a doubled jump:\n%s", state())
	}
	run(func() error { return RemoveForward("net") })
	if err := sb.Host.Do(func() error { return CheckForward(s) }); err == nil {
		t.Fatal("CHECK passed without the rules")
	}
}

// TestMayAccept: STATUS counts a rule as lifting a DROP policy for a
// network unless its source, input interface, output interface (traffic
// to the pods, or into another program's bridge) or conntrack state rules
// out the network's new outbound traffic.
func TestMayAccept(t *testing.T) {
	p := netip.MustParsePrefix("10.7.0.0/24")
	bridge, veths, vlan := HostSide{Name: "cni0"}, HostSide{Name: "vp", Prefix: true}, HostSide{Name: "cni0.100"}
	docker := map[string]bool{"docker0": true}
	for _, tc := range []struct {
		rule string
		side HostSide
		want bool
	}{
		{"-A FORWARD -s 10.7.0.0/16 -j ACCEPT", bridge, true},
		{"-A FORWARD -s 10.7.0.0/25 -j ACCEPT", bridge, true}, // with another rule for the rest, say
		{"-A FORWARD -s 10.8.0.0/24 -j ACCEPT", bridge, false},
		{"-A FORWARD ! -s 10.0.0.0/8 -j ACCEPT", bridge, false},
		{"-A FORWARD ! -s 192.168.0.0/16 -j ACCEPT", bridge, true},
		{"-A FORWARD -s 10.7.0.0/24 -j DROP", bridge, false},
		{"-A FORWARD -s 10.7.0.0/24 -j DOCKER-USER", bridge, false},
		{"-A FORWARD -i cni0 -j ACCEPT", bridge, true},
		{"-A FORWARD -i cni+ -j ACCEPT", bridge, true},
		{"-A FORWARD -i cni1 -j ACCEPT", bridge, false},
		{"-A FORWARD -i docker0 ! -o docker0 -j ACCEPT", bridge, false},
		{"-A FORWARD ! -i docker0 -j ACCEPT", bridge, true},
		{"-A FORWARD ! -i cni0 -j ACCEPT", bridge, false},
		{"-A FORWARD ! -i cn+ -j ACCEPT", bridge, false},
		{"-A FORWARD -o cni0 -j ACCEPT", bridge, false},
		{"-A FORWARD -i cni0 -o eth0 -j ACCEPT", bridge, true},
		{"-A FORWARD -i cni0 -o up0 -j ACCEPT", bridge, true}, // policy routing may send it there
		{"-A FORWARD -i cni0 -o docker0 -j ACCEPT", bridge, false},
		{"-A FORWARD -i cni0.100 -j ACCEPT", vlan, true},
		{"-A FORWARD -i cni0 -j ACCEPT", vlan, false},
		{"-A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT", bridge, false},
		{"-A FORWARD -s 10.7.0.0/24 -d 203.0.113.0/24 -j ACCEPT", bridge, true},
		{"-A FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT", bridge, true}, // kube-proxy's, or one the operator's MARK set
		{"-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", bridge, false},
		{"-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", bridge, false},
		{"-A FORWARD -m conntrack ! --ctstate INVALID -j ACCEPT", bridge, true},
		{"-A FORWARD -m state --state NEW,ESTABLISHED -j ACCEPT", bridge, true},
		{"-A FORWARD -p tcp -m tcp --dport 22 -j ACCEPT", bridge, true},
		{"-A FORWARD -i vp+ -j ACCEPT", veths, true},
		{"-A FORWARD -i v+ -j ACCEPT", veths, true},
		{"-A FORWARD -i vpa+ -j ACCEPT", veths, true},
		{"-A FORWARD -i vb+ -j ACCEPT", veths, false},
		{"-A FORWARD -i cni0 -j ACCEPT", veths, false},
		{"-A FORWARD -o vp+ -j ACCEPT", veths, false},
		{"-A FORWARD ! -i vp0123456789abc -j ACCEPT", veths, true}, // every other pod
		{"-A FORWARD ! -i vpa+ -j ACCEPT", veths, true},
		{"-A FORWARD ! -i vp+ -j ACCEPT", veths, false},
		{"-A FORWARD ! -i v+ -j ACCEPT", veths, false},
	} {
		rule := strings.Fields(tc.rule)[2:]
		target, _ := targetOf(rule)
		if got := target == "ACCEPT" && matchLevel(rule, p, tc.side, docker) != never; got != tc.want {
			t.Errorf("%s (%+v): %v, want %v", tc.rule, tc.side, got, tc.want)
		}
	}
}

// TestMatchLevel: the matches that surely hold for the network's new
// outbound traffic — a rule with only those drops it for certain.
func TestMatchLevel(t *testing.T) {
	p := netip.MustParsePrefix("10.7.0.0/24")
	bridge, veths := HostSide{Name: "cni0"}, HostSide{Name: "vp", Prefix: true}
	for _, tc := range []struct {
		rule string
		side HostSide
		want level
	}{
		{"-j REJECT --reject-with icmp-host-prohibited", bridge, always},
		{"-m comment --comment x -j DROP", bridge, always},
		{"-s 10.0.0.0/8 -j DROP", bridge, always},
		{"-s 10.7.0.0/25 -j DROP", bridge, maybe},
		{"-s 10.8.0.0/24 -j DROP", bridge, never},
		{"! -s 10.8.0.0/24 -j DROP", bridge, always},
		{"! -s 10.0.0.0/8 -j DROP", bridge, never},
		{"-i cni0 -j DROP", bridge, always},
		{"-i cni+ -j DROP", bridge, always},
		{"-i vp+ -j DROP", veths, always},
		{"-i vp0123 -j DROP", veths, maybe},
		{"! -i docker0 -j DROP", bridge, always},
		{"-i docker0 -j DROP", bridge, never},
		{"-o eth0 -j DROP", bridge, maybe},
		{"! -o cni0 -j DROP", bridge, always},
		{"-o docker0 -j DROP", bridge, never},
		{"-m conntrack --ctstate NEW -j DROP", bridge, always},
		{"-m conntrack --ctstate INVALID -j DROP", bridge, never},
		{"-m conntrack ! --ctstate INVALID -j DROP", bridge, always},
		{"-p tcp -m tcp --dport 25 -j DROP", bridge, maybe},
		{"-d 203.0.113.0/24 -j DROP", bridge, maybe},
		{"-i cni0 -d 203.0.113.0/24 -j DROP", veths, never},
	} {
		if got := matchLevel(strings.Fields(tc.rule), p, tc.side, map[string]bool{"docker0": true}); got != tc.want {
			t.Errorf("%s (%+v): %v, want %v", tc.rule, tc.side, got, tc.want)
		}
	}
}

// TestWalk: a new packet of the network follows FORWARD in order, into
// the chains it jumps or goes to: what drops it for certain before any
// rule may accept it blocks the network, whatever the policy.
func TestWalk(t *testing.T) {
	p := netip.MustParsePrefix("10.7.0.0/24")
	side := HostSide{Name: "cni0"}
	// What is decided on a walk's outcome, under each policy.
	for _, tc := range []struct {
		f      fate
		policy string
		want   int
	}{
		{accepted, "DROP", notBlocked},
		{accepted | back, "DROP", notBlocked}, // an accept that may match (-o eth0): not blocked
		{accepted | dropped, "ACCEPT", notBlocked},
		{dropped, "ACCEPT", byRule},
		{dropped, "DROP", byRule},
		{dropped | back, "DROP", byPolicy},
		{dropped | back, "ACCEPT", notBlocked},
		{back, "DROP", byPolicy},
		{back, "ACCEPT", notBlocked},
	} {
		if got := blockedBy(tc.f, tc.policy); got != tc.want {
			t.Errorf("blockedBy(%b, %s) = %d, want %d", tc.f, tc.policy, got, tc.want)
		}
	}
	for _, tc := range []struct {
		name, listing string
		want          fate
	}{
		{"empty", "-P FORWARD ACCEPT", back},
		{"RHEL's final reject", "-P FORWARD ACCEPT\n-A FORWARD -j REJECT --reject-with icmp-host-prohibited", dropped},
		{"an accept before it", "-P FORWARD ACCEPT\n-A FORWARD -i cni0 -j ACCEPT\n-A FORWARD -j REJECT", accepted},
		{"an accept after it", "-P FORWARD ACCEPT\n-A FORWARD -j DROP\n-A FORWARD -i cni0 -j ACCEPT", dropped},
		{"a drop that may not match", "-P FORWARD ACCEPT\n-A FORWARD -p tcp --dport 25 -j DROP", dropped | back},
		{"a drop of others", "-P FORWARD ACCEPT\n-A FORWARD -i docker0 -j DROP", back},
		{"Docker's", "-P FORWARD DROP\n-N DOCKER-USER\n-N DOCKER-ISOLATION-STAGE-1\n-N DOCKER-ISOLATION-STAGE-2\n" +
			"-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n" +
			"-A FORWARD -i docker0 ! -o docker0 -j ACCEPT\n-A DOCKER-USER -j RETURN\n" +
			"-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2\n-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n" +
			"-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP\n-A DOCKER-ISOLATION-STAGE-2 -j RETURN", back},
		{"an operator's chain: its RETURN skips its drop", "-P FORWARD ACCEPT\n-N OP\n-A FORWARD -j OP\n-A OP -s 10.7.0.0/24 -j RETURN\n-A OP -j DROP", back},
		{"an operator's chain: its drop", "-P FORWARD ACCEPT\n-N OP\n-A FORWARD -j OP\n-A OP -s 10.9.0.0/24 -j RETURN\n-A OP -j DROP", dropped},
		{"an accept that may match, under Docker's policy", "-P FORWARD DROP\n-A FORWARD -o eth0 -j ACCEPT", accepted | back},
		{"a goto ends the caller", "-P FORWARD DROP\n-N OP\n-A FORWARD -g OP\n-A FORWARD -j ACCEPT", back},
		{"a jump comes back", "-P FORWARD DROP\n-N OP\n-A FORWARD -j OP\n-A FORWARD -j ACCEPT", accepted},
		{"a queue to user space decides, under Docker's policy", "-P FORWARD DROP\n-A FORWARD -j NFQUEUE --queue-num 0\n-A FORWARD -j DROP", accepted | dropped},
		{"a queue for TCP only", "-P FORWARD DROP\n-A FORWARD -p tcp -j NFQUEUE --queue-num 0", accepted | dropped | back},
		{"a comment with spaces", `-P FORWARD ACCEPT` + "\n" + `-A FORWARD -m comment --comment "no -s 10.7.0.0/24 here" -j DROP`, dropped},
	} {
		w := &walker{table: readTable(tc.listing), p: p, side: side}
		if got := w.walk("FORWARD"); got != tc.want {
			t.Errorf("%s: %b, want %b", tc.name, got, tc.want)
		}
	}
	// The rule named is one every packet of the network meets, not one
	// behind a jump only TCP takes.
	w := &walker{table: readTable("-P FORWARD ACCEPT\n-N X\n-A FORWARD -p tcp -j X\n-A X -j DROP\n-A FORWARD -j DROP"), p: p, side: side}
	if got := w.walk("FORWARD"); got != dropped || w.drop != "-A FORWARD -j DROP" {
		t.Errorf("walk %b naming %q, want dropped naming -A FORWARD -j DROP", got, w.drop)
	}
}
