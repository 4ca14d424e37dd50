package filter

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// Forward acceptance. Docker sets the iptables filter FORWARD policy to
// DROP; without accept rules of its own a network's pods then reach
// nothing beyond the host. An nftables accept in another table cannot
// override that drop (a packet any base chain drops is dropped), so, like
// the reference firewall plugin and Docker's DOCKER-USER, a network gets a
// chain of its own in the filter table, reached by a jump from FORWARD:
//
//	-A FORWARD -m comment --comment "netns-cni:<network>" -j NETNS-CNI-FW-<hash>
//	-A NETNS-CNI-FW-<hash> -s <subnet> -j ACCEPT
//	-A NETNS-CNI-FW-<hash> -d <subnet> -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
//
// in each family the network has subnets of: its traffic out, and the
// replies. The rules are written with the iptables binary whatever the
// masquerade backend, so that iptables-nft (and Docker, kube-proxy) can
// still read the table: native nftables expressions for a conntrack state
// make the whole table "incompatible" to it. With iptables-nft the rules
// are read back over netlink, so an ADD that finds them in place execs
// nothing.

// ForwardSpec is what a network accepts in FORWARD.
type ForwardSpec struct {
	// Network is the network's key (netconf.Key).
	Network string
	Subnets []netip.Prefix
}

// ForwardChain is the filter chain of a network's accept rules.
func ForwardChain(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "NETNS-CNI-FW-" + strings.ToUpper(hex.EncodeToString(sum[:]))[:15]
}

func forwardComment(network string) string { return "netns-cni:" + network }

type family struct {
	proto iptables.Protocol
	cmd   string
	nft   nftables.TableFamily
}

var families = []family{{iptables.ProtocolIPv4, "iptables", nftables.TableFamilyIPv4}, {iptables.ProtocolIPv6, "ip6tables", nftables.TableFamilyIPv6}}

func (f family) of(p netip.Prefix) bool { return p.Addr().Is4() == (f.proto == iptables.ProtocolIPv4) }

func (f family) open() (*iptables.IPTables, error) { return iptview.Open(f.proto) }

// body is the chain's rules for the family's subnets.
func (f family) body(s ForwardSpec) [][]string {
	var rules [][]string
	for _, p := range s.Subnets {
		if f.of(p) {
			p = p.Masked()
			rules = append(rules, []string{"-s", p.String(), "-j", "ACCEPT"},
				[]string{"-d", p.String(), "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"})
		}
	}
	return rules
}

func (f family) jump(network string) []string {
	return []string{"-m", "comment", "--comment", forwardComment(network), "-j", ForwardChain(network)}
}

// Tools names the iptables binaries EnsureForward execs (iptview.Binary),
// "" for a family the host has none of. What EnsureForward does depends
// on them, so a record that the rules were found in place names them too:
// the rules an ADD on a host without iptables did not write are not "in
// place" for an ADD after iptables was installed.
func Tools() string {
	return "iptables=" + iptview.Binary(iptables.ProtocolIPv4) + " ip6tables=" + iptview.Binary(iptables.ProtocolIPv6)
}

// EnsureForward makes the network's accept rules cover its subnets. When
// iptables-nft shows them in place over netlink, it execs nothing. On a
// host without the iptables binary of a family there is no iptables
// FORWARD policy to get past, and nothing is done for it.
func EnsureForward(s ForwardSpec) error {
	return eachFamily(func(f family) error { return ensureForward(f, s) })
}

// eachFamily runs fn for both families, in turn: on the calling thread,
// whose network namespace is the one meant (a goroutine may run on a
// thread in another).
func eachFamily(fn func(f family) error) error {
	var errs []error
	for _, f := range families {
		errs = append(errs, fn(f))
	}
	return errors.Join(errs...)
}

func ensureForward(f family, s ForwardSpec) error {
	body := f.body(s)
	if len(body) == 0 || inPlace(f, s) {
		return nil
	}
	if iptview.Binary(f.proto) == "" {
		return nil // no iptables: no iptables FORWARD policy to get past
	}
	chain := ForwardChain(s.Network)
	// The network's first attachment (no chain yet, netlink says):
	// chain, rules and jump in one exec.
	if absent(f, s.Network) {
		var b iptview.Batch
		b.Add("filter", ":"+chain, "-", "[0:0]")
		for _, r := range body {
			b.Add("filter", append([]string{"-A", chain}, r...)...)
		}
		b.Add("filter", append([]string{"-I", "FORWARD", "1"}, f.jump(s.Network)...)...)
		if err := b.Restore(f.proto); err == nil {
			return nil
		}
		// Rule by rule below, which names what is wrong.
	}
	t, err := f.open()
	if err != nil {
		return err
	}
	// Rules are added, never rewritten: after an operator changed the
	// network's subnet, pods of the old one still run and their
	// traffic must still pass. The rules of every subnet the network
	// had go with its last attachment (RemoveForward).
	if ok, err := t.ChainExists("filter", chain); err == nil && !ok {
		if err := t.NewChain("filter", chain); err != nil {
			return fmt.Errorf("%s: create chain %s: %w", f.cmd, chain, err)
		}
	}
	var errs []error
	for _, r := range body {
		if err := t.AppendUnique("filter", chain, r...); err != nil {
			errs = append(errs, fmt.Errorf("%s: add rule to %s: %w", f.cmd, chain, err))
		}
	}
	if err := t.InsertUnique("filter", "FORWARD", 1, f.jump(s.Network)...); err != nil {
		errs = append(errs, fmt.Errorf("%s: add jump to %s: %w", f.cmd, chain, err))
	}
	return errors.Join(errs...)
}

// inPlace reports whether iptables-nft's filter table holds, read over
// netlink, the network's chain with both accept rules of each of its
// subnets of family f (other rules beside them: the subnets it had
// before), and the jump to it. False when it cannot tell (iptables-legacy,
// nothing there yet).
func inPlace(f family, s ForwardSpec) bool {
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	tb := &nftables.Table{Family: f.nft, Name: "filter"}
	rules, err := conn.GetRules(tb, &nftables.Chain{Name: ForwardChain(s.Network), Table: tb})
	if err != nil {
		return false
	}
	for _, p := range s.Subnets {
		if f.of(p) && (!matchesPrefix(rules, p.Masked(), true) || !matchesPrefix(rules, p.Masked(), false)) {
			return false
		}
	}
	return iptview.Jumps(f.proto, "filter", "FORWARD", ForwardChain(s.Network))
}

// matchesPrefix reports whether one of rules matches the packet's source
// (src) or destination address against prefix p as iptables-nft writes
// "-s p" or "-d p": a load of the address (of its first bytes only, for
// a prefix on a byte boundary), masked for any other prefix, compared
// with p's address.
func matchesPrefix(rules []*nftables.Rule, p netip.Prefix, src bool) bool {
	addr := p.Addr().AsSlice()
	off := map[bool]uint32{true: 12, false: 16}[src] // IPv4 header
	if p.Addr().Is6() {
		off = map[bool]uint32{true: 8, false: 24}[src]
	}
	for _, r := range rules {
		for i, e := range r.Exprs {
			pl, ok := e.(*expr.Payload)
			if !ok || pl.Base != expr.PayloadBaseNetworkHeader || pl.Offset != off || int(pl.Len) > len(addr) || i+1 >= len(r.Exprs) {
				continue
			}
			mask, next := bytes.Repeat([]byte{0xff}, int(pl.Len)), r.Exprs[i+1]
			if bw, ok := next.(*expr.Bitwise); ok && i+2 < len(r.Exprs) {
				mask, next = bw.Mask, r.Exprs[i+2]
			}
			c, ok := next.(*expr.Cmp)
			if !ok || c.Op != expr.CmpOpEq || !bytes.Equal(c.Data, addr[:pl.Len]) {
				continue
			}
			ones := 0
			for _, b := range mask {
				ones += bits.OnesCount8(b)
			}
			if ones == p.Bits() {
				return true
			}
		}
	}
	return false
}

// RemoveForward deletes the network's jump and chain, both families. What
// is not there is no error.
func RemoveForward(network string) error {
	return eachFamily(func(f family) error { return removeForward(f, network) })
}

func removeForward(f family, network string) error {
	if iptview.Binary(f.proto) == "" || absent(f, network) {
		return nil // without the binary there can be no such rules
	}
	// The jump and the chain in one exec; when the jump is not there (an
	// operator removed it), one by one below.
	chain := ForwardChain(network)
	var b iptview.Batch
	b.Add("filter", append([]string{"-D", "FORWARD"}, f.jump(network)...)...)
	b.Add("filter", "-F", chain)
	b.Add("filter", "-X", chain)
	if b.Restore(f.proto) == nil {
		return nil
	}
	t, err := f.open()
	if err != nil {
		return err
	}
	var errs []error
	if err := iptview.DeleteAll(t, "filter", "FORWARD", f.jump(network)...); err != nil {
		errs = append(errs, fmt.Errorf("%s: delete jump to %s: %w", f.cmd, chain, err))
	}
	if err := t.ClearAndDeleteChain("filter", chain); err != nil && !iptview.Gone(err) {
		errs = append(errs, fmt.Errorf("%s: delete chain %s: %w", f.cmd, chain, err))
	}
	return errors.Join(errs...)
}

// absent reports whether, certainly, no chain of the network is there
// (pkg/iptview: read over netlink, no exec).
func absent(f family, network string) bool {
	return iptview.Lacks(f.nft, func(table, chain string) bool { return table == "filter" && chain == ForwardChain(network) })
}

// CheckForward reports the network's accept rules missing (for CHECK).
func CheckForward(s ForwardSpec) error {
	for _, f := range families {
		body := f.body(s)
		if len(body) == 0 {
			continue
		}
		if iptview.Binary(f.proto) == "" {
			continue // none were made
		}
		t, err := f.open()
		if err != nil {
			return err
		}
		for _, r := range append(body, nil) {
			chain, spec := ForwardChain(s.Network), r
			if r == nil {
				chain, spec = "FORWARD", f.jump(s.Network)
			}
			ok, err := t.Exists("filter", chain, spec...)
			if err != nil && !iptview.Gone(err) {
				return fmt.Errorf("%s filter: check %s: %w", f.cmd, chain, err)
			}
			if !ok {
				return fmt.Errorf("%s filter: %s lacks %q (accepting the network's forwarded traffic)", f.cmd, chain, strings.Join(spec, " "))
			}
		}
	}
	return nil
}

// HostSide names the host interfaces a network's forwarded traffic comes
// in by: a bridge or its VLAN link (Name, exact), or the host ends of veth
// pairs (every name starting with Name, Prefix true).
type HostSide struct {
	Name   string
	Prefix bool
}

// ifaceMatch reports whether an iptables interface match ("cni0", or
// "vp+": a trailing "+" matches every name it starts) matches name.
func ifaceMatch(pattern, name string) bool {
	if stem, wild := strings.CutSuffix(pattern, "+"); wild {
		return strings.HasPrefix(name, stem)
	}
	return pattern == name
}

// matches reports whether pattern may match one of h's names.
func (h HostSide) matches(pattern string) bool {
	if h.Name == "" {
		return false
	}
	if stem, wild := strings.CutSuffix(pattern, "+"); wild && h.Prefix {
		return strings.HasPrefix(h.Name, stem) || strings.HasPrefix(stem, h.Name)
	}
	if h.Prefix {
		return strings.HasPrefix(pattern, h.Name)
	}
	return ifaceMatch(pattern, h.Name)
}

// coversAll reports whether pattern matches every one of h's names.
func (h HostSide) coversAll(pattern string) bool {
	if h.Prefix {
		stem, wild := strings.CutSuffix(pattern, "+")
		return wild && strings.HasPrefix(h.Name, stem)
	}
	return h.Name != "" && ifaceMatch(pattern, h.Name)
}
