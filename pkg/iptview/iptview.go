// Package iptview answers "is this iptables chain there?" without
// exec'ing iptables, where the answer can be trusted. iptables-nft keeps
// its rules in nftables tables, readable over netlink in microseconds;
// iptables-legacy keeps them in the kernel's x_tables, which netlink does
// not show. So a "no" read over netlink counts only when this network
// namespace has no x_tables table loaded: then no iptables binary of
// either kind holds a rule here. Otherwise the caller execs iptables.
package iptview

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// legacyFiles list the x_tables tables loaded in the calling thread's
// namespace, per family.
var legacyFiles = map[nftables.TableFamily]string{
	nftables.TableFamilyIPv4: "/proc/thread-self/net/ip_tables_names",
	nftables.TableFamilyIPv6: "/proc/thread-self/net/ip6_tables_names",
}

// Legacy reports whether x_tables tables of family fam (iptables-legacy)
// may be loaded in the calling thread's namespace: true when it cannot
// tell. Their rules are invisible over netlink and their changes do not
// count in the nftables ruleset generation.
func Legacy(fam nftables.TableFamily) bool {
	b, err := os.ReadFile(legacyFiles[fam])
	if err != nil {
		return !os.IsNotExist(err)
	}
	return strings.TrimSpace(string(b)) != ""
}

// Family is the nftables family iptables-nft keeps protocol p's tables in.
func Family(p iptables.Protocol) nftables.TableFamily {
	if p == iptables.ProtocolIPv6 {
		return nftables.TableFamilyIPv6
	}
	return nftables.TableFamilyIPv4
}

// systemDirs are where a host keeps iptables when the plugin's PATH does
// not say: runtimes run plugins with their own environment, and some with
// a PATH that lacks the sbin directories.
var systemDirs = []string{"/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"}

var binaries sync.Map // iptables.Protocol → string

// Binary is the path of the iptables binary of protocol p (iptables or
// ip6tables): the one on PATH, else the one in the usual system
// directories; "" when the host has none. Every netns-cni package execs
// iptables through it (Open), so an ADD and the DEL after it act alike
// whatever PATH each was given.
func Binary(p iptables.Protocol) string {
	if b, ok := binaries.Load(p); ok {
		return b.(string)
	}
	cmd := Cmd(p)
	path, err := exec.LookPath(cmd)
	for _, dir := range systemDirs {
		if err == nil {
			break
		}
		path, err = exec.LookPath(filepath.Join(dir, cmd))
	}
	if err != nil {
		path = ""
	}
	binaries.Store(p, path)
	return path
}

// NFTBased reports whether protocol p's binary (Binary) is iptables-nft,
// which keeps its rules in nftables, readable over netlink: what it links
// to is xtables-nft-multi (or iptables-nft), not xtables-legacy-multi.
// False without a binary.
func NFTBased(p iptables.Protocol) bool {
	path := Binary(p)
	if path == "" {
		return false
	}
	real, err := filepath.EvalSymlinks(path)
	return err == nil && strings.Contains(filepath.Base(real), "nft")
}

// Cmd is the name of protocol p's binary: iptables or ip6tables.
func Cmd(p iptables.Protocol) string {
	if p == iptables.ProtocolIPv6 {
		return "ip6tables"
	}
	return "iptables"
}

var opened sync.Map // iptables.Protocol → *iptables.IPTables

// Open is go-iptables for protocol p, exec'ing Binary(p), with a 10 s
// wait for the xtables lock. Made once per process: go-iptables execs
// "iptables --version" to make one, and the masquerade, FORWARD and
// port-mapping steps of one ADD or DEL each need it. (It holds no state
// of a namespace: each command it runs is exec'd in the caller's.)
func Open(p iptables.Protocol) (*iptables.IPTables, error) {
	if t, ok := opened.Load(p); ok {
		return t.(*iptables.IPTables), nil
	}
	path := Binary(p)
	if path == "" {
		return nil, fmt.Errorf("%s: not found on PATH or in %s", Cmd(p), strings.Join(systemDirs, ", "))
	}
	t, err := iptables.New(iptables.IPFamily(p), iptables.Timeout(10), iptables.Path(path))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", Cmd(p), err)
	}
	opened.Store(p, t)
	return t, nil
}

// Absent reports whether, certainly, no iptables chain of protocol p that
// match selects exists in the calling thread's namespace: there is no
// iptables binary for p (so no rule of ours was ever written with it), or
// Lacks says so. Callers exec iptables only when it is false.
func Absent(p iptables.Protocol, match func(table, chain string) bool) bool {
	if Binary(p) == "" {
		return true
	}
	return Lacks(Family(p), match)
}

// Lacks reports whether, certainly, no iptables chain of family fam in the
// calling thread's namespace is one match selects (by table and chain
// name). False when it cannot tell: x_tables tables are loaded here
// (iptables-legacy), or nftables cannot be read.
func Lacks(fam nftables.TableFamily, match func(table, chain string) bool) bool {
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	chains, err := conn.ListChainsOfTableFamily(fam)
	if err != nil {
		return false
	}
	return lacksAmong(chains, fam, match)
}

// lacksAmong is Lacks answered from chains the caller has read already
// (of family fam, or of all families): one netlink dump answers several
// questions.
func lacksAmong(chains []*nftables.Chain, fam nftables.TableFamily, match func(table, chain string) bool) bool {
	p := iptables.ProtocolIPv4
	if fam == nftables.TableFamilyIPv6 {
		p = iptables.ProtocolIPv6
	}
	// x_tables tables loaded here hide rules from netlink — unless the
	// binary netns-cni execs is iptables-nft: then every rule of ours is
	// in nftables, whatever else loaded a legacy table.
	if Legacy(fam) && !NFTBased(p) {
		return false
	}
	return !slices.ContainsFunc(chains, func(c *nftables.Chain) bool {
		return c.Table.Family == fam && match(c.Table.Name, c.Name)
	})
}

// Jumps reports whether, certainly, chain of table (protocol p's tables)
// in the calling thread's namespace holds a rule that jumps to target,
// read over netlink where iptables-nft keeps its rules: no exec. False
// when it cannot tell (iptables-legacy) or there is none.
func Jumps(p iptables.Protocol, table, chain, target string) bool {
	fam := Family(p)
	if Legacy(fam) && !NFTBased(p) {
		return false
	}
	conn, err := nftables.New()
	if err != nil {
		return false
	}
	t := &nftables.Table{Family: fam, Name: table}
	rules, err := conn.GetRules(t, &nftables.Chain{Name: chain, Table: t})
	if err != nil {
		return false
	}
	return slices.ContainsFunc(rules, func(r *nftables.Rule) bool {
		return slices.ContainsFunc(r.Exprs, func(e expr.Any) bool {
			v, ok := e.(*expr.Verdict)
			return ok && v.Kind == expr.VerdictJump && v.Chain == target
		})
	})
}

// AbsentAmong is Absent answered from chains the caller has read already.
func AbsentAmong(chains []*nftables.Chain, p iptables.Protocol, match func(table, chain string) bool) bool {
	return Binary(p) == "" || lacksAmong(chains, Family(p), match)
}

// Gone reports whether an iptables error says that what it was asked about
// is not there: the rule, the chain, or — iptables-legacy's way, exit
// status 2 — the chain a rule jumps to ("Couldn't load target": a jump to
// a chain that does not exist cannot exist either). iptables-nft says
// "does not exist" or "No chain/target/match by that name". (Its 1.8.9
// answer for a missing chain, exit status 1 with "incompatible", is not
// matched here: go-iptables' Exists already takes exit 1 for "no".)
func Gone(err error) bool {
	var e *iptables.Error
	if !errors.As(err, &e) {
		return false
	}
	msg := e.Error()
	return e.IsNotExist() || strings.Contains(msg, "does not exist") || strings.Contains(msg, "Couldn't load target") ||
		strings.Contains(msg, "No chain/target/match")
}

// DeleteAll deletes every copy of rule from chain (an iptables -D deletes
// one) until iptables says there is none (Gone: no such rule, chain or —
// iptables-legacy's way — target chain), which is no error. A jump
// doubled by hand, or by two writers of an older version, would otherwise
// keep its target chain referenced, and the chain's delete after it would
// fail. One exec a copy, and one more.
func DeleteAll(t *iptables.IPTables, table, chain string, rule ...string) error {
	const most = 64 // no chain is jumped to this often but by a runaway writer
	for range most {
		if err := t.Delete(table, chain, rule...); err != nil {
			if Gone(err) {
				return nil
			}
			return err
		}
	}
	return fmt.Errorf("%s %s: %s still there after %d deletes", table, chain, strings.Join(rule, " "), most)
}

// Batch is lines for iptables-restore by table, the tables in the order
// first named, applied in one exec (Restore).
type Batch struct {
	tables []string
	lines  map[string][]string
}

// Add appends a rule's arguments ("-A", chain, …; ":CHAIN", "-", "[0:0]"
// declares a chain, emptying it if it exists) to table's lines, quoted
// where they hold a blank or a quote.
func (b *Batch) Add(table string, args ...string) {
	if b.lines == nil {
		b.lines = map[string][]string{}
	}
	if _, ok := b.lines[table]; !ok {
		b.tables = append(b.tables, table)
	}
	b.lines[table] = append(b.lines[table], line(args...))
}

// Restore applies the batch in one exec of protocol p's restore binary
// (Binary's "-restore" sibling) with --noflush: chains and rules it does
// not name stay. One process start instead of one per rule (each costs
// 5-25 ms, with the whole ruleset read), and all or nothing per table: on
// an error the table is as it was. An empty batch execs nothing.
func (b *Batch) Restore(p iptables.Protocol) error {
	var lines []string
	for _, t := range b.tables {
		lines = append(append(append(lines, "*"+t), b.lines[t]...), "COMMIT")
	}
	if len(lines) == 0 {
		return nil
	}
	return restore(p, lines)
}

func restore(p iptables.Protocol, lines []string) error {
	bin := Binary(p)
	if bin == "" {
		return fmt.Errorf("%s: not found on PATH or in %s", Cmd(p), strings.Join(systemDirs, ", "))
	}
	cmd := exec.Command(bin+"-restore", "--noflush", "-w", "10")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s-restore: %w: %s", Cmd(p), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// line is a rule's arguments as a line of iptables-restore's format: an
// argument with a blank or a quote is quoted.
func line(args ...string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'\\") {
			a = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}
