package nat

import (
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestPlanIsPerNetworkNotPerContainer(t *testing.T) {
	// 100 containers of one network: their /24 addresses reduce to the subnets.
	var subnets []netip.Prefix
	for i := range 100 {
		subnets = append(subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 2)}), 24))
		subnets = append(subnets, netip.MustParsePrefix("fd00::5/64"))
	}
	rules := Plan(Spec{Network: "net", Subnets: subnets})
	if len(rules) != 2 || rules[0].Subnet.String() != "10.1.0.0/24" || rules[1].Subnet.String() != "fd00::/64" {
		t.Fatalf("plan %+v", rules)
	}
	if rules[0].Multicast().String() != "224.0.0.0/4" || rules[1].Multicast().String() != "ff00::/8" {
		t.Fatal("multicast ranges")
	}
	jumps, body := iptSpecs("net", rules[:1])
	if len(jumps) != 1 || len(body) != 3 || sig(body[0]) != "10.1.0.0/24 RETURN" || sig(body[1]) != "224.0.0.0/4 RETURN" || sig(body[2]) != " MASQUERADE" {
		t.Fatalf("iptables specs %v %v", jumps, body)
	}
	if n := len(ChainName("a-very-long-network-name-that-goes-on")); n > 28 {
		t.Fatalf("chain name %d bytes, iptables allows 28", n)
	}
	if m := mask(netip.MustParsePrefix("10.0.0.0/12")); m[0] != 0xff || m[1] != 0xf0 || m[2] != 0 {
		t.Fatalf("mask %x", m)
	}
}

func TestPlanWithExceptions(t *testing.T) {
	s := Spec{Network: "net", Subnets: pfx("10.1.0.0/24", "fd00::/64"), NoMasq: pfx("10.244.0.0/16", "fd00:244::/56", "10.244.0.0/16")}
	rules := Plan(s)
	if len(rules) != 2 || len(rules[0].NoMasq) != 1 || rules[0].NoMasq[0].String() != "10.244.0.0/16" || rules[1].NoMasq[0].String() != "fd00:244::/56" {
		t.Fatalf("plan %+v", rules)
	}
	plain := Plan(Spec{Network: "net", Subnets: pfx("10.1.0.0/24")})
	if plain[0].Comment == rules[0].Comment || !strings.HasPrefix(rules[0].Comment, plain[0].Comment+" ") {
		t.Fatalf("comments %q %q: exceptions must change the comment, keeping the subnet's prefix", plain[0].Comment, rules[0].Comment)
	}
	_, body := iptSpecs("net", rules[:1])
	if len(body) != 4 || sig(body[1]) != "10.244.0.0/16 RETURN" {
		t.Fatalf("iptables body %v", body)
	}
}

// ruleCount counts our rules for a network in the sandbox host.
func ruleCount(t *testing.T, kind, network string) int {
	t.Helper()
	switch kind {
	case NFTables:
		conn, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName(network)}
		rules, err := conn.GetRules(tb, &nftables.Chain{Name: nftChain, Table: tb})
		if err != nil {
			return 0
		}
		return len(rules)
	default:
		n := 0
		for _, cmd := range []string{"iptables", "ip6tables"} {
			out, _ := exec.Command(cmd, "-t", "nat", "-S").Output()
			for _, l := range strings.Split(string(out), "\n") {
				if strings.Contains(l, ChainName(network)) && strings.HasPrefix(l, "-A") {
					n++
				}
			}
		}
		return n
	}
}

func TestBackendsEnsureCheckRemove(t *testing.T) {
	for _, kind := range []string{NFTables, IPTables} {
		t.Run(kind, func(t *testing.T) {
			if kind == IPTables {
				nstest.NeedCommand(t, "iptables", "make deps")
			}
			sb := nstest.NewT(t)
			err := sb.Host.Do(func() error {
				b, err := New(kind)
				if err != nil {
					return err
				}
				if err := b.Available(); err != nil {
					return err
				}
				spec := Spec{Network: "net", Subnets: pfx("10.1.0.0/24", "fd00:1::/64")}
				if err := b.Check(spec); err == nil {
					t.Error("Check passed before Ensure")
				}
				for range 3 { // idempotent: the rule count does not grow
					if err := b.Ensure(spec); err != nil {
						return err
					}
				}
				want := map[string]int{NFTables: 2, IPTables: 2*3 + 2}[kind]
				if n := ruleCount(t, kind, "net"); n != want {
					t.Errorf("%d rules after 3 Ensures, want %d", n, want)
				}
				if err := b.Check(spec); err != nil {
					t.Errorf("Check after Ensure: %v", err)
				}
				// Someone flushes everything: Check notices, Ensure puts it back.
				flush(t, kind)
				if err := b.Check(spec); err == nil {
					t.Error("Check passed after a flush")
				}
				if err := b.Ensure(spec); err != nil {
					return err
				}
				if err := b.Check(spec); err != nil {
					t.Errorf("Check after re-Ensure: %v", err)
				}
				if kind == NFTables {
					// Rules altered under their comment, or an accept put
					// before them: the traffic leaves unmasqueraded. Check
					// says so (it used to look at comments only) and Ensure
					// puts the chain back as planned.
					tbl := "inet " + TableName("net") + " " + nftChain
					for _, tamper := range []string{
						`nft replace rule ` + tbl + ` handle $(nft -a list chain ` + tbl + ` | awk '/10.1.0.0\/24/ {print $NF; exit}') ip saddr 10.1.0.0/24 accept comment '"netns-cni:net 10.1.0.0/24"'`,
						`nft insert rule ` + tbl + ` accept`,
					} {
						if out, err := exec.Command("sh", "-c", tamper).CombinedOutput(); err != nil {
							t.Fatalf("%s: %v %s", tamper, err, out)
						}
						if err := b.Check(spec); err == nil {
							t.Errorf("Check passed after: %s", tamper)
						}
						if err := b.Ensure(spec); err != nil {
							return err
						}
						if err := b.Check(spec); err != nil {
							t.Errorf("Check after Ensure repaired %q: %v", tamper, err)
						}
						if n := ruleCount(t, kind, "net"); n != want {
							t.Errorf("%d rules after the repair of %q, want %d", n, tamper, want)
						}
					}
				}
				// Exceptions added later replace the rules, not add to them.
				spec.NoMasq = pfx("10.244.0.0/16", "fd00:244::/56")
				for range 2 {
					if err := b.Ensure(spec); err != nil {
						return err
					}
				}
				if err := b.Check(spec); err != nil {
					t.Errorf("Check with exceptions: %v", err)
				}
				withExcept := map[string]int{NFTables: 2, IPTables: 2*4 + 2}[kind]
				if n := ruleCount(t, kind, "net"); n != withExcept {
					t.Errorf("%d rules with exceptions, want %d", n, withExcept)
				}
				// The subnet changes under live pods: ADDs of the old and the
				// new subnet alternate; the rules of both stay, and each
				// passes Check (the iptables chain's exemptions in any order).
				edited := Spec{Network: "net", Subnets: pfx("10.3.0.0/24"), NoMasq: spec.NoMasq}
				before := iptHandles(t, "net")
				for range 2 {
					for _, s := range []Spec{edited, spec} {
						if err := b.Ensure(s); err != nil {
							return err
						}
					}
				}
				for _, s := range []Spec{spec, edited} {
					if err := b.Check(s); err != nil {
						t.Errorf("Check of %v after the subnet changed: %v", s.Subnets, err)
					}
				}
				// The new subnet's exemption was inserted: the chain's rules
				// are the ones it had (a rewrite would have replaced them,
				// emptying the chain for a moment).
				if after := iptHandles(t, "net"); kind == IPTables && (len(after) != len(before)+1 || !containsAll(after, before)) {
					t.Errorf("chain rewritten: rule handles %v, then %v", before, after)
				}
				if kind == IPTables {
					// The chain as an older version left it after the edit,
					// rewritten for the new subnet alone: the next ADD of the
					// new subnet puts the old one's exemption back.
					out, _ := exec.Command("iptables", "-t", "nat", "-S", ChainName("net")).Output()
					for _, l := range strings.Split(string(out), "\n") {
						if strings.Contains(l, "-d 10.1.0.0/24") {
							if msg, err := exec.Command("sh", "-c", "iptables -t nat "+strings.Replace(l, "-A", "-D", 1)).CombinedOutput(); err != nil {
								t.Fatalf("%s: %v %s", l, err, msg)
							}
						}
					}
					if err := b.Ensure(edited); err != nil {
						return err
					}
					if err := b.Check(spec); err != nil {
						t.Errorf("the old subnet's exemption not put back: %v", err)
					}
				}
				// Another network's rules are its own.
				if err := b.Ensure(Spec{Network: "other", Subnets: pfx("10.2.0.0/24")}); err != nil {
					return err
				}
				for range 2 {
					if err := b.Remove("net"); err != nil {
						return err
					}
				}
				if n := ruleCount(t, kind, "net"); n != 0 {
					t.Errorf("%d rules left after Remove", n)
				}
				if err := b.Check(Spec{Network: "other", Subnets: pfx("10.2.0.0/24")}); err != nil {
					t.Errorf("Remove of net touched other: %v", err)
				}
				return b.Remove("other")
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

func flush(t *testing.T, kind string) {
	t.Helper()
	var cmds [][]string
	if kind == NFTables {
		cmds = [][]string{{"nft", "flush", "ruleset"}}
	} else {
		cmds = [][]string{{"iptables", "-t", "nat", "-F"}, {"ip6tables", "-t", "nat", "-F"}}
	}
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
}

// iptHandles are the nftables handles of the rules of network's IPv4
// iptables(-nft) masquerade chain: a rule keeps its handle until it is
// deleted.
func iptHandles(t *testing.T, network string) []uint64 {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "nat"}
	rules, _ := conn.GetRules(tb, &nftables.Chain{Name: ChainName(network), Table: tb})
	var hs []uint64
	for _, r := range rules {
		hs = append(hs, r.Handle)
	}
	return hs
}

func containsAll(have, want []uint64) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}
