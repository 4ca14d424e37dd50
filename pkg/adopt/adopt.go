// Package adopt removes what the reference plugins (containernetworking/
// plugins ptp and bridge, Debian's 1.1.1 to upstream v1.10.0) made for an
// attachment beyond its links and its address: their masquerade state. A
// node switches to netns-cni with live pods, so netns-cni's DEL and GC
// meet attachments the reference made, and must remove them whole.
//
// The reference masquerades per attachment, in one of two ways (learnt
// from its documentation and observed behaviour):
//
//   - iptables: a chain in the nat table named "CNI-" and the first 24 hex
//     digits of the SHA-512 of network name and container ID, with the
//     rules of the attachment, reached from POSTROUTING by one jump per
//     address ("-s <address> -j <chain>"), in each family it has
//     addresses of;
//   - nftables (upstream, ipMasqBackend "nftables", or a host without
//     iptables): rules in chain masq_checks of table inet
//     cni_plugins_masquerade whose comment starts with the first 16 hex
//     digits of the SHA-512 of the network name, "-", and the first 16 of
//     that of "<ifname>:<container ID>".
//
// Both are looked for whatever the config says: the pod may have been made
// under another config.
//
// The reference portmap, chained after either, forwards an attachment's
// host ports in one of two ways too:
//
//   - iptables: a chain in the nat table named "CNI-DN-" and the first 21
//     hex digits of the same SHA-512 of network name and container ID,
//     with its DNAT rules, reached by a jump from CNI-HOSTPORT-DNAT;
//   - nftables (upstream, "backend": "nftables"): rules in chains
//     hostports, hostip_hostports and masquerading of tables ip and ip6
//     cni_hostport whose comment is the container ID.
//
// A node whose conflist moves from portmap to the built-in port mappings
// DELs pods portmap mapped without running portmap: netns-cni removes
// those for it.
package adopt

import (
	"bytes"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mattn/go-shellwords"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// Attachment names a reference attachment.
type Attachment struct {
	Network, ContainerID, IfName string
	// Addrs are its addresses, when known: the reference portmap marks its
	// nftables rules with the container ID alone, the same on every
	// network the container is on; with Addrs only rules that name one of
	// them are the attachment's.
	Addrs []netip.Addr
}

func hash(s string) string {
	sum := sha512.Sum512([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Chain is the reference's iptables chain of an attachment.
func (a Attachment) Chain() string { return ("CNI-" + hash(a.Network+a.ContainerID))[:28] }

// comment is the comment on the reference's iptables rules.
func (a Attachment) comment() string {
	return fmt.Sprintf("name: %q id: %q", a.Network, a.ContainerID)
}

// nftPrefix starts the comment of the reference's nftables rules of a.
func (a Attachment) nftPrefix() string {
	return networkPrefix(a.Network) + hash(a.IfName + ":" + a.ContainerID)[:16]
}

func networkPrefix(network string) string { return hash(network)[:16] + "-" }

// The reference's nftables table and chain.
const (
	nftTable = "cni_plugins_masquerade"
	nftChain = "masq_checks"
)

// RemoveMasquerade removes the reference's masquerade state of the
// attachments: their iptables chains and the jumps to them, both families,
// and their nftables rules. What is not there is no error.
func RemoveMasquerade(atts []Attachment) error {
	if len(atts) == 0 {
		return nil
	}
	errs := []error{removeNFT(func(comment string) bool {
		return slices.ContainsFunc(atts, func(a Attachment) bool { return strings.HasPrefix(comment, a.nftPrefix()) })
	})}
	for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		errs = append(errs, removeChains(p, atts))
	}
	return errors.Join(errs...)
}

// CollectNFT removes the reference's nftables masquerade rules of network
// whose attachment is not in valid (GC).
func CollectNFT(network string, valid []Attachment) error {
	return removeNFT(func(comment string) bool {
		return strings.HasPrefix(comment, networkPrefix(network)) &&
			!slices.ContainsFunc(valid, func(a Attachment) bool { return strings.HasPrefix(comment, a.nftPrefix()) })
	})
}

// removeNFT deletes the rules of the reference's masquerade chain whose
// comment drop selects. The table and chain, shared by every network,
// stay (the reference keeps them too).
func removeNFT(drop func(comment string) bool) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable}
	rules, err := conn.GetRules(t, &nftables.Chain{Name: nftChain, Table: t})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s %s: %w", nftTable, nftChain, err)
	}
	n, err := delRules(conn, rules, drop)
	if err != nil {
		return err
	}
	return flushIf(conn, n, "remove reference masquerade rules")
}

// delRules queues, on conn, the deletion of the rules whose comment drop
// selects, and reports how many it queued.
func delRules(conn *nftables.Conn, rules []*nftables.Rule, drop func(comment string) bool) (int, error) {
	n := 0
	for _, r := range rules {
		if c, ok := userdata.GetString(r.UserData, userdata.TypeComment); ok && drop(c) {
			if err := conn.DelRule(r); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// flushIf sends conn's queued deletions, when there are n > 0; rules gone
// meanwhile are no error.
func flushIf(conn *nftables.Conn, n int, what string) error {
	if n == 0 {
		return nil
	}
	if err := conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// removeChains removes, in one family, the chains of atts that exist and
// the POSTROUTING jumps to them.
func removeChains(p iptables.Protocol, atts []Attachment) error {
	cmd := iptview.Cmd(p)
	if iptview.Absent(p, func(table, chain string) bool {
		return table == "nat" && slices.ContainsFunc(atts, func(a Attachment) bool { return chain == a.Chain() })
	}) {
		return nil
	}
	t, err := iptview.Open(p)
	if err != nil {
		return err
	}
	chains, err := t.ListChains("nat")
	if err != nil {
		return fmt.Errorf("%s: list nat chains: %w", cmd, err)
	}
	var present []Attachment
	for _, a := range atts {
		if slices.Contains(chains, a.Chain()) {
			present = append(present, a)
		}
	}
	if len(present) == 0 {
		return nil
	}
	jumps, err := t.List("nat", "POSTROUTING")
	if err != nil {
		return fmt.Errorf("%s: list POSTROUTING: %w", cmd, err)
	}
	var errs []error
	for _, a := range present {
		for _, line := range jumps {
			if src, ok := jumpFrom(line, a.Chain()); ok {
				errs = append(errs, deleteJump(t, src, a))
			}
		}
		if err := t.ClearAndDeleteChain("nat", a.Chain()); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete chain %s: %w", cmd, a.Chain(), err))
		}
	}
	return errors.Join(errs...)
}

// jumpFrom returns the source of a listed POSTROUTING rule that jumps to
// chain.
func jumpFrom(line, chain string) (string, bool) {
	f := strings.Fields(line)
	j, s := slices.Index(f, "-j"), slices.Index(f, "-s")
	if len(f) < 2 || f[0] != "-A" || j < 0 || j+1 >= len(f) || f[j+1] != chain || s < 0 || s+1 >= len(f) {
		return "", false
	}
	return f[s+1], true
}

// deleteJump deletes the jump from src to a's chain, with the comment the
// reference writes, or without one (as very old versions wrote it).
func deleteJump(t *iptables.IPTables, src string, a Attachment) error {
	with := []string{"-s", src, "-j", a.Chain(), "-m", "comment", "--comment", a.comment()}
	if ok, err := t.Exists("nat", "POSTROUTING", with...); err == nil && ok {
		return t.Delete("nat", "POSTROUTING", with...)
	}
	return iptview.DeleteAll(t, "nat", "POSTROUTING", "-s", src, "-j", a.Chain())
}

// PortmapChain is the reference portmap's iptables chain of an attachment.
func (a Attachment) PortmapChain() string { return ("CNI-DN-" + hash(a.Network+a.ContainerID))[:28] }

// The reference portmap's top-level DNAT chain and nftables table.
const (
	portmapDNAT  = "CNI-HOSTPORT-DNAT"
	portmapTable = "cni_hostport"
)

var portmapChains = []string{"hostports", "hostip_hostports", "masquerading"}

// PortmapSearch is how far RemovePortmap looks beyond what one netlink
// read shows for certain.
type PortmapSearch struct {
	// ExecIfUnsure: where netlink cannot tell (iptables-legacy keeps its
	// chains where netlink does not show them), look for the chains with
	// iptables.
	ExecIfUnsure bool
	// NFT: remove the reference's nftables rules too. They are marked
	// with the container ID alone, the same on every network the
	// container is on: without the attachment's Addrs only a caller with
	// a reason to expect this network's (the runtime passed mappings, the
	// reference made the attachment, or the container is gone) asks.
	NFT bool
}

// RemovePortmap removes the reference portmap's forwards of the
// attachments: their iptables chains and the jumps to them, both
// families, and, as search says, their nftables rules. The shared chains
// and tables stay, as the reference keeps them. What is not there is no
// error. One netlink dump of the host's chains says whether there is
// anything to remove, so an attachment portmap never mapped costs no exec.
func RemovePortmap(atts []Attachment, search PortmapSearch) error {
	if len(atts) == 0 {
		return nil
	}
	conn, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer func() { _ = conn.CloseLasting() }()
	chains, listErr := conn.ListChains()
	has := func(fam nftables.TableFamily, match func(table, chain string) bool) bool {
		return listErr == nil && slices.ContainsFunc(chains, func(c *nftables.Chain) bool {
			return c.Table.Family == fam && match(c.Table.Name, c.Name)
		})
	}
	isChain := func(table, chain string) bool {
		return table == "nat" && slices.ContainsFunc(atts, func(a Attachment) bool { return chain == a.PortmapChain() })
	}
	var errs []error
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		for _, chain := range portmapChains {
			if search.NFT && has(fam, func(table, c string) bool { return table == portmapTable && c == chain }) {
				errs = append(errs, removePortmapNFT(conn, &nftables.Chain{Name: chain, Table: &nftables.Table{Family: fam, Name: portmapTable}}, atts))
			}
		}
	}
	for _, p := range []iptables.Protocol{iptables.ProtocolIPv4, iptables.ProtocolIPv6} {
		certainlyNone := listErr == nil && iptview.AbsentAmong(chains, p, isChain)
		if certainlyNone || !search.ExecIfUnsure && !has(iptview.Family(p), isChain) {
			continue
		}
		errs = append(errs, removePortmapChains(p, atts))
	}
	return errors.Join(errs...)
}

func removePortmapNFT(conn *nftables.Conn, chain *nftables.Chain, atts []Attachment) error {
	rules, err := conn.GetRules(chain.Table, chain)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s %s: %w", portmapTable, chain.Name, err)
	}
	n := 0
	for _, r := range rules {
		c, ok := userdata.GetString(r.UserData, userdata.TypeComment)
		if !ok || !slices.ContainsFunc(atts, func(a Attachment) bool {
			return c == a.ContainerID && (len(a.Addrs) == 0 || slices.ContainsFunc(a.Addrs, func(ip netip.Addr) bool { return names(r, ip) }))
		}) {
			continue
		}
		if err := conn.DelRule(r); err != nil {
			return err
		}
		n++
	}
	return flushIf(conn, n, "remove reference portmap rules")
}

// names reports whether rule r compares with or sets address ip (the
// container's address in portmap's DNAT and masquerade rules).
func names(r *nftables.Rule, ip netip.Addr) bool {
	want := ip.AsSlice()
	return slices.ContainsFunc(r.Exprs, func(e expr.Any) bool {
		switch e := e.(type) {
		case *expr.Cmp:
			return bytes.HasPrefix(e.Data, want)
		case *expr.Immediate:
			return bytes.HasPrefix(e.Data, want)
		}
		return false
	})
}

func removePortmapChains(p iptables.Protocol, atts []Attachment) error {
	cmd := iptview.Cmd(p)
	t, err := iptview.Open(p)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		if ok, err := t.ChainExists("nat", a.PortmapChain()); err != nil || !ok {
			continue
		}
		jumps, err := t.List("nat", portmapDNAT)
		if err == nil {
			for _, line := range jumps {
				// The jump's comment holds quoted quotes and spaces: the
				// listing is split the way a shell would.
				f, err := shellwords.Parse(line)
				if err == nil && len(f) > 2 && f[0] == "-A" && f[len(f)-1] == a.PortmapChain() && f[len(f)-2] == "-j" {
					errs = append(errs, t.Delete("nat", portmapDNAT, f[2:]...))
				}
			}
		}
		if err := t.ClearAndDeleteChain("nat", a.PortmapChain()); err != nil {
			errs = append(errs, fmt.Errorf("%s: delete chain %s: %w", cmd, a.PortmapChain(), err))
		}
	}
	return errors.Join(errs...)
}
