package filter

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/mattn/go-shellwords"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// ForwardBlocked is STATUS's question for a network whose accept rules are
// off: does the filter table drop its traffic on the way out? It follows
// a new packet from each subnet, in by side, through FORWARD in order —
// into the chains FORWARD jumps or goes to, back on RETURN — and describes
// what drops it: a DROP or REJECT rule that surely matches it before any
// rule could accept it, or the DROP policy (Docker sets it) at the end.
// "" when a rule may accept it first, or the policy accepts. Where a
// match cannot be judged (a destination, a port, a mark) the rule may
// match and may not: STATUS reports a block only when every path drops,
// since a node marked NotReady by mistake costs more than a pod the
// operator's own rules leave unreachable. One exec of iptables -S per
// family reads the whole table.
func ForwardBlocked(subnets []netip.Prefix, side HostSide) (string, error) {
	for _, f := range families {
		if iptview.Binary(f.proto) == "" {
			continue
		}
		var mine []netip.Prefix
		for _, p := range subnets {
			if f.of(p) {
				mine = append(mine, p.Masked())
			}
		}
		if len(mine) == 0 {
			continue
		}
		out, err := exec.Command(iptview.Binary(f.proto), "-w", "10", "-t", "filter", "-S").Output()
		if err != nil {
			continue // no filter table
		}
		tbl := readTable(string(out))
		family := map[bool]int{true: netlink.FAMILY_V4, false: netlink.FAMILY_V6}[f.proto == iptables.ProtocolIPv4]
		others := otherBridges(side, family)
		for _, p := range mine {
			w := &walker{table: tbl, p: p, side: side, others: others}
			switch blockedBy(w.walk("FORWARD"), tbl.policy) {
			case byRule:
				return fmt.Sprintf("the %s filter rule %q drops %s before any rule accepts it", f.cmd, w.drop, p), nil
			case byPolicy:
				return fmt.Sprintf("the %s filter FORWARD policy is DROP (Docker sets it) and no rule accepts %s", f.cmd, p), nil
			}
		}
	}
	return "", nil
}

// What blocks a network's traffic, if anything.
const (
	notBlocked = iota
	byRule
	byPolicy
)

// blockedBy decides on what may become of the packet in FORWARD: blocked
// only when no path accepts it — every path ends in a rule that drops it,
// or at the end of FORWARD under a DROP policy.
func blockedBy(f fate, policy string) int {
	switch {
	case f&accepted != 0:
		return notBlocked
	case f&back == 0:
		return byRule // f is dropped: every path met a drop
	case policy == "DROP":
		return byPolicy
	}
	return notBlocked
}

// table is a listed filter table (iptables -S): each chain's rules, split
// the way a shell would (a comment may hold spaces), and FORWARD's policy.
type table struct {
	rules  map[string][][]string
	text   map[string][]string // the rules as listed, for messages
	policy string
}

func readTable(listing string) table {
	t := table{rules: map[string][][]string{}, text: map[string][]string{}}
	for _, line := range strings.Split(listing, "\n") {
		f, err := shellwords.Parse(line)
		if err != nil || len(f) < 2 {
			continue
		}
		switch f[0] {
		case "-P", "-N": // a chain, with no rules yet
			t.rules[f[1]] = nil
			if f[0] == "-P" && f[1] == "FORWARD" && len(f) > 2 {
				t.policy = f[2]
			}
		case "-A":
			t.rules[f[1]] = append(t.rules[f[1]], f[2:])
			t.text[f[1]] = append(t.text[f[1]], line)
		}
	}
	return t
}

// fate is what may become of a packet in a chain: a set of outcomes.
type fate uint8

const (
	accepted fate = 1 << iota
	dropped
	back // the chain's end, or a RETURN: on with the caller's next rule
	next // (within a chain) on with its next rule
)

// walker follows a new packet of subnet p, in by side, through a table.
type walker struct {
	table  table
	p      netip.Prefix
	side   HostSide
	others map[string]bool
	stack  []string
	drop   string // the first rule met that surely drops the packet
}

// walk returns what may become of the packet in chain.
func (w *walker) walk(chain string) fate { return w.walkFrom(chain, true) }

// walkFrom is walk of a chain the packet reaches surely, or only maybe:
// the rule that drops it is recorded (for the message) only where every
// packet not dropped before comes, not behind a jump some take.
func (w *walker) walkFrom(chain string, sure bool) fate {
	if slices.Contains(w.stack, chain) {
		return back // iptables refuses loops; a listing read mid-change may show one
	}
	w.stack = append(w.stack, chain)
	defer func() { w.stack = w.stack[:len(w.stack)-1] }()
	var out fate
	for i, rule := range w.table.rules[chain] {
		lv := matchLevel(rule, w.p, w.side, w.others)
		if lv == never {
			continue
		}
		var res fate
		target, jump := targetOf(rule)
		switch _, isChain := w.table.rules[target]; {
		case target == "ACCEPT":
			res = accepted
		case target == "DROP" || target == "REJECT":
			res = dropped
			if sure && lv == always && w.drop == "" {
				w.drop = w.table.text[chain][i]
			}
		case target == "RETURN":
			res = back
		case target == "NFQUEUE" || target == "QUEUE":
			// A program in user space decides (an IPS, say): it may
			// accept. The walk ends here either way.
			res = accepted | dropped
		case isChain:
			sub := w.walkFrom(target, sure && lv == always)
			res = sub &^ back
			if sub&back != 0 {
				res |= map[bool]fate{true: next, false: back}[jump]
			}
		default:
			res = next // no target, or one that does not end the walk (LOG, MARK)
		}
		if lv == maybe {
			res |= next
		}
		out |= res &^ next
		if res&next == 0 {
			return out
		}
		if res&back != 0 {
			sure = false // some packets leave the chain undecided: not all meet what follows
		}
	}
	return out | back
}

// targetOf is a rule's target and whether it is a jump (-j), which comes
// back, rather than a goto (-g).
func targetOf(rule []string) (string, bool) {
	for i := 0; i+1 < len(rule); i++ {
		if rule[i] == "-j" || rule[i] == "-g" {
			return rule[i+1], rule[i] == "-j"
		}
	}
	return "", true
}

// level is how surely a rule's matches hold for a packet.
type level int

const (
	never level = iota
	maybe
	always
)

// matchLevel is how surely the matches of a rule (its words after
// "-A CHAIN") hold for new traffic from subnet p that comes in by side and
// leaves by a link that is neither side's nor one of others (another
// program's bridges): its source (-s), input interface (-i), output
// interface (-o) and conntrack state are judged; every other match — a
// destination, a mark, a port — may hold.
func matchLevel(rule []string, p netip.Prefix, side HostSide, others map[string]bool) level {
	lv := always
	for i := 0; i+1 < len(rule); i++ {
		flag, v := rule[i], rule[i+1]
		if flag == "-j" || flag == "-g" {
			break // the target's options follow
		}
		neg := i > 0 && rule[i-1] == "!"
		var l level
		switch flag {
		case "-s":
			if q, err := netip.ParsePrefix(v); err != nil {
				l = maybe
			} else {
				l = graded(q.Bits() <= p.Bits() && q.Contains(p.Addr()), q.Overlaps(p), neg)
			}
		case "-i":
			l = graded(side.coversAll(v), side.matches(v), neg)
		case "-o":
			switch {
			case neg && side.coversAll(v):
				l = always
			case !neg && (side.matches(v) || others[v]):
				l = never // traffic to the pods, or into another program's bridge
			default:
				l = maybe
			}
		case "--ctstate", "--state":
			l = pick(slices.Contains(strings.Split(v, ","), "NEW") == neg, never, always)
		case "-m", "--comment":
			continue
		default:
			if !strings.HasPrefix(flag, "-") {
				continue // a value, or "!"
			}
			l = maybe
		}
		lv = min(lv, l)
	}
	return lv
}

// graded is how surely a match holds, negated or not, that takes all of
// the network's traffic, some of it, or none.
func graded(all, some, neg bool) level {
	switch {
	case all:
		return pick(neg, never, always)
	case some:
		return maybe
	}
	return pick(neg, always, never)
}

// pick is a if cond, else b.
func pick(cond bool, a, b level) level {
	if cond {
		return a
	}
	return b
}

// otherBridges names the host's bridges that are neither side nor where
// a default route of family leaves: another program's (Docker's docker0),
// whose output rules (-o docker0) accept traffic to its containers, not
// the network's traffic out. (Only bridges: with policy routing the
// network's traffic may leave by a link the main default route does not
// use.)
func otherBridges(side HostSide, family int) map[string]bool {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	out, names := map[string]bool{}, map[int]string{}
	for _, l := range links {
		name := l.Attrs().Name
		names[l.Attrs().Index] = name
		if l.Type() == "bridge" && !side.matches(name) {
			out[name] = true
		}
	}
	// Every table's: with policy routing the default route the network's
	// traffic takes may be in a table of its own.
	if routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE); err == nil {
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue // not a default route
				}
			}
			delete(out, names[r.LinkIndex])
			for _, hop := range r.MultiPath {
				delete(out, names[hop.LinkIndex])
			}
		}
	}
	return out
}
