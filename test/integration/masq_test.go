package integration

import (
	"crypto/sha256"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/nftgen"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

// outside makes the sandbox's "outside" namespace (nstest.NewOutside).
func (w *world) outside(t *testing.T) *nsutil.NS {
	t.Helper()
	out, err := w.sb.NewOutside()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sourceSeen is nstest.SourceSeen.
func sourceSeen(_ *testing.T, pod, outside *nsutil.NS, dst string) (string, error) {
	return nstest.SourceSeen(pod, outside, dst)
}

// natRules counts the NAT rules in the fake host, of both backends.
func (w *world) natRules(t *testing.T) int {
	t.Helper()
	n := 0
	_ = w.inHost(func() error {
		out, _ := exec.Command("nft", "list", "ruleset").Output()
		n += strings.Count(string(out), "masquerade")
		for _, c := range []string{"iptables", "ip6tables"} {
			out, _ := exec.Command(c, "-t", "nat", "-S").Output()
			n += strings.Count(string(out), "\n-A ")
		}
		return nil
	})
	return n
}

func TestVethPTPMasquerade(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		for _, fam := range families[:2] {
			t.Run(backend+"/"+fam.name, func(t *testing.T) {
				t.Parallel()
				w := newWorld(t)
				out := w.outside(t)
				before := w.hostState(t)
				list := w.list("1.1.0", "masq", w.ptpConf("veth-ptp", fam, fmt.Sprintf(`"ipMasq":true,"ipMasqBackend":%q`, backend)))
				dst, hostAddr := "192.0.2.2", "192.0.2.1"
				if fam.v6 {
					dst, hostAddr = "2001:db8:ff::2", "2001:db8:ff::1"
				}
				var pods []*nsutil.NS
				rules := 0
				for i := range 3 {
					pod := w.sb.PodT(t, fmt.Sprintf("p%d", i))
					pods = append(pods, pod)
					if _, err := w.add(list, w.rt(fmt.Sprintf("c%d", i), pod, "eth0")); err != nil {
						t.Fatalf("ADD: %v", err)
					}
					if i == 0 {
						rules = w.natRules(t)
						if rules == 0 {
							t.Fatal("ipMasq made no rule")
						}
					} else if got := w.natRules(t); got != rules {
						t.Fatalf("%d NAT rules with %d containers, %d with one: rules must be per network", got, i+1, rules)
					}
					src, err := sourceSeen(t, pod, out, dst)
					if err != nil {
						t.Fatal(err)
					}
					if src != hostAddr {
						t.Fatalf("outside saw source %s, want the host's %s", src, hostAddr)
					}
				}
				if err := w.check(list, w.rt("c0", pods[0], "eth0")); err != nil {
					t.Fatalf("CHECK: %v", err)
				}
				// Someone flushes the NAT rules: CHECK notices, the next ADD
				// puts them back.
				_ = w.inHost(func() error {
					_ = exec.Command("nft", "flush", "ruleset").Run()
					_ = exec.Command("iptables", "-t", "nat", "-F").Run()
					_ = exec.Command("ip6tables", "-t", "nat", "-F").Run()
					return nil
				})
				if err := w.check(list, w.rt("c0", pods[0], "eth0")); err == nil {
					t.Fatal("CHECK passed with the NAT rules flushed")
				}
				extra := w.sb.PodT(t, "extra")
				if _, err := w.add(list, w.rt("extra", extra, "eth0")); err != nil {
					t.Fatal(err)
				}
				if src, err := sourceSeen(t, pods[1], out, dst); err != nil || src != hostAddr {
					t.Fatalf("after re-ADD: source %s, %v", src, err)
				}
				// DEL in every way; the rules stay until the last container goes.
				if err := w.del(list, w.rt("extra", extra, "eth0")); err != nil {
					t.Fatal(err)
				}
				if err := w.del(list, w.rt("c0", pods[0], "eth0")); err != nil {
					t.Fatal(err)
				}
				rt1 := w.rt("c1", pods[1], "eth0")
				rt1.NetNS = ""
				if err := w.del(list, rt1); err != nil {
					t.Fatalf("DEL with empty CNI_NETNS: %v", err)
				}
				if w.natRules(t) == 0 {
					t.Fatal("rules removed while a container is left")
				}
				if err := w.sb.RemovePod(pods[2]); err != nil {
					t.Fatal(err)
				}
				if err := w.del(list, w.rt("c2", pods[2], "eth0")); err != nil {
					t.Fatalf("DEL after the namespace is gone: %v", err)
				}
				if after := w.settled(t, before); after != before {
					t.Fatalf("host state after the last DEL differs:\n%s", stateDiff(before, after))
				}
			})
		}
	}
}

// TestNonMasqueradeCIDRs: destinations listed in nonMasqueradeCIDRs see
// the containers' own addresses (pod-to-pod across nodes); others still
// see the host's. A CIDR that does not parse is a code-7 error.
func TestNonMasqueradeCIDRs(t *testing.T) {
	for _, plugin := range []string{"veth-ptp", "bridge-nat"} {
		t.Run(plugin, func(t *testing.T) {
			w := newWorld(t)
			out := w.outside(t)
			extra := `"ipMasq":true,"nonMasqueradeCIDRs":["192.0.2.0/24"]`
			if plugin == "bridge-nat" {
				extra += `,"isDefaultGateway":true`
			}
			list := w.list("1.1.0", "nomasq", w.ptpConf(plugin, families[2], extra))
			pod := w.sb.PodT(t, "pod")
			res, err := w.add(list, w.rt("ctr", pod, "eth0"))
			if err != nil {
				t.Fatal(err)
			}
			own := ""
			for _, ip := range res.IPs {
				if ip.Address.IP.To4() != nil && ip.Interface != nil {
					own = ip.Address.IP.String()
				}
			}
			if src, err := sourceSeen(t, pod, out, "192.0.2.2"); err != nil || src != own {
				t.Fatalf("excepted destination saw %q (%v), want the container's %s", src, err, own)
			}
			if src, err := sourceSeen(t, pod, out, "2001:db8:ff::2"); err != nil || src != "2001:db8:ff::1" {
				t.Fatalf("other destination saw %q (%v), want the host's address", src, err)
			}
			if err := w.check(list, w.rt("ctr", pod, "eth0")); err != nil {
				t.Fatalf("CHECK: %v", err)
			}
			if err := w.del(list, w.rt("ctr", pod, "eth0")); err != nil {
				t.Fatal(err)
			}
			stdin := w.pluginStdin("1.1.0", "badcidr", plugin, families[0], `"ipMasq":true,"nonMasqueradeCIDRs":["10.244.0.0"]`)
			e := w.exec(plugin, w.pluginEnv("ADD", "c2", pod.Path(), "eth0"), stdin).cniError(t)
			if e.Code != 7 || !strings.Contains(e.Msg, `"nonMasqueradeCIDRs[0]"`) {
				t.Fatalf("bad CIDR: %+v", e)
			}
		})
	}
}

// TestRulesReadBackOnlyAfterAChange: ADD skips reading back the network's
// masquerade and FORWARD rules while the ruleset generation is the one it
// found them in place at (the stamp in the store stays as it was); once
// anything changed the ruleset — here someone deleted them — the next ADD
// reads them back and puts them in place again. Both backends.
func TestRulesReadBackOnlyAfterAChange(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			w := newWorld(t)
			before := w.hostState(t)
			list := w.list("1.1.0", "stamp", w.ptpConf("veth-ptp", families[0], fmt.Sprintf(`"ipMasq":true,"ipMasqBackend":%q`, backend)))
			stamps := func() string {
				t.Helper()
				files, _ := filepath.Glob(filepath.Join(w.sb.Dir, "ipam", list.Name, ".netns-cni", "in-place-*"))
				var b strings.Builder
				for _, f := range files {
					c, _ := os.ReadFile(f)
					fmt.Fprintf(&b, "%s=%s\n", filepath.Base(f), c)
				}
				return b.String()
			}
			var rts []*libcni.RuntimeConf
			add := func(id string) { rts = append(rts, w.addPod(t, list, id)) }
			add("a")
			add("b") // the first ADD's own rules changed the generation: b reads back and stamps
			stamped := stamps()
			if !strings.Contains(stamped, "in-place-masquerade=") || !strings.Contains(stamped, "in-place-forward=") {
				t.Fatalf("no stamps after two ADDs: %q", stamped)
			}
			rules := w.natRules(t)
			add("c")
			if got := stamps(); got != stamped {
				t.Fatalf("an ADD on an unchanged ruleset rewrote the stamps:\n%s\nwas\n%s", got, stamped)
			}
			// Someone removes the network's rules.
			if err := w.inHost(func() error {
				var c []string
				if backend == "nftables" {
					c = []string{"nft", "delete", "table", "inet", "netns-cni-" + list.Name}
				} else {
					c = []string{"iptables", "-t", "nat", "-F", "POSTROUTING"}
				}
				if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %w %s", c, err, out)
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			add("d")
			if got := w.natRules(t); got != rules {
				t.Fatalf("%d NAT rules after the ADD that followed their removal, want %d", got, rules)
			}
			for _, rt := range rts {
				if err := w.del(list, rt); err != nil {
					t.Fatal(err)
				}
			}
			if after := w.settled(t, before); after != before {
				t.Fatalf("left:\n%s", stateDiff(before, after))
			}
		})
	}
}

// TestStampOfAnotherVersionIsNotTrusted: v0.3.0 checked its nftables
// masquerade rule by its comment alone, and stamped a chain with a
// foreign accept before the rule as "in place"; this version, upgraded
// over it, trusted that stamp (same file, same hash of the spec) and left
// the pods unmasqueraded until the ruleset changed. The stamp now names
// the binary's version: a stamp written the old way, at the ruleset's
// current generation, is read back, and the chain is rewritten.
func TestStampOfAnotherVersionIsNotTrusted(t *testing.T) {
	w := newWorld(t)
	before := w.hostState(t)
	list := w.list("1.1.0", "oldstamp", w.ptpConf("veth-ptp", families[0], `"ipMasq":true,"ipMasqBackend":"nftables"`))
	var rts []*libcni.RuntimeConf
	add := func(id string) { rts = append(rts, w.addPod(t, list, id)) }
	add("a")
	table := nat.TableName(list.Name)
	if err := w.inHost(func() error {
		out, err := exec.Command("nft", "insert", "rule", "inet", table, "postrouting", "ip", "saddr", "10.10.0.0/24", "accept").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// What v0.3.0 wrote after its ADD found "its" rule there.
	spec := nat.Spec{Network: list.Name, Subnets: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/24")}}
	var gen string
	_ = w.inHost(func() error { gen = nftgen.Stamp(); return nil })
	if gen == "" {
		t.Fatal("no ruleset generation to stamp")
	}
	old := fmt.Sprintf("%s %x", gen, sha256.Sum256([]byte(fmt.Sprintf("%s %+v", "nftables", spec))))
	if err := os.WriteFile(filepath.Join(w.sb.Dir, "ipam", list.Name, ".netns-cni", "in-place-masquerade"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	add("b")
	var chain []byte
	_ = w.inHost(func() (err error) {
		chain, err = exec.Command("nft", "list", "chain", "inet", table, "postrouting").CombinedOutput()
		return err
	})
	if strings.Contains(string(chain), "10.10.0.0/24 accept") {
		t.Fatalf("the ADD after an older version's stamp left the foreign accept:\n%s", chain)
	}
	for _, rt := range rts {
		if err := w.check(list, rt); err != nil {
			t.Errorf("CHECK %s: %v", rt.ContainerID, err)
		}
	}
	for _, rt := range rts {
		if err := w.del(list, rt); err != nil {
			t.Fatal(err)
		}
	}
	if after := w.settled(t, before); after != before {
		t.Fatalf("left:\n%s", stateDiff(before, after))
	}
}

// addPod ADDs a new pod called id (its eth0) to list and returns its
// runtime config.
func (w *world) addPod(t *testing.T, list *libcni.NetworkConfigList, id string) *libcni.RuntimeConf {
	t.Helper()
	rt := w.rt(id, w.sb.PodT(t, id), "eth0")
	if _, err := w.add(list, rt); err != nil {
		t.Fatalf("ADD %s: %v", id, err)
	}
	return rt
}
