// Package nat masquerades traffic that leaves a container network, with one
// set of rules per network — never per container — so the rule count and
// the cost of ADD and DEL do not grow with the number of containers. Two
// backends: nftables over netlink, in a table of its own per network (no
// binary exec'd), and iptables through github.com/coreos/go-iptables.
//
// The rules are plain data (Plan), testable without root; the backends
// apply them idempotently: Ensure adds whatever is missing, so a ruleset
// someone flushed is put back by the next ADD.
package nat

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Backends by their config name (ipMasqBackend).
const (
	NFTables = "nftables"
	IPTables = "iptables"
)

// Backend applies the masquerade rules of networks.
type Backend interface {
	// Ensure makes the network's rules cover the spec's subnets, adding
	// what is missing, replacing what is out of date, leaving the rest.
	Ensure(s Spec) error
	// Remove deletes every rule of the network; none is not an error.
	Remove(network string) error
	// Check reports what is missing for the spec.
	Check(s Spec) error
	// Available reports whether the backend can work on this host.
	Available() error
}

// New returns the backend named kind ("" means nftables).
func New(kind string) (Backend, error) {
	switch kind {
	case "", NFTables:
		return nftBackend{}, nil
	case IPTables:
		return &iptBackend{}, nil
	}
	return nil, fmt.Errorf("unknown backend %q", kind)
}

// Spec is what a network wants masqueraded: traffic from Subnets to
// anywhere but the subnets themselves, multicast and NoMasq (destinations
// reached with the containers' own addresses, such as a cluster's pod
// CIDR on other nodes).
type Spec struct {
	Network string
	Subnets []netip.Prefix
	NoMasq  []netip.Prefix
}

// Rule is one masquerade rule: traffic from Subnet to anywhere but Subnet,
// NoMasq and multicast leaves with the host's address.
type Rule struct {
	Network string
	Subnet  netip.Prefix
	// NoMasq are the excepted destinations of Subnet's family.
	NoMasq []netip.Prefix
	// Comment tags the rule so that it can be found again; it changes when
	// NoMasq does.
	Comment string
}

// Multicast is the range that is never masqueraded, per family.
func (r Rule) Multicast() netip.Prefix {
	if r.Subnet.Addr().Is4() {
		return netip.MustParsePrefix("224.0.0.0/4")
	}
	return netip.MustParsePrefix("ff00::/8")
}

// Plan returns the rules for a network's subnets: one per distinct subnet,
// sorted, whatever the number of containers.
func Plan(s Spec) []Rule {
	uniq := sortedUnique(s.Subnets)
	rules := make([]Rule, len(uniq))
	for i, sub := range uniq {
		var except []netip.Prefix
		for _, n := range sortedUnique(s.NoMasq) {
			if n.Addr().Is4() == sub.Addr().Is4() {
				except = append(except, n)
			}
		}
		c := subnetComment(s.Network, sub)
		if len(except) > 0 {
			var parts []string
			for _, n := range except {
				parts = append(parts, n.String())
			}
			c += " x" + shortHash(strings.Join(parts, ","))[:8]
		}
		rules[i] = Rule{Network: s.Network, Subnet: sub, NoMasq: except, Comment: c}
	}
	return rules
}

func sortedUnique(ps []netip.Prefix) []netip.Prefix {
	var uniq []netip.Prefix
	for _, p := range ps {
		p = p.Masked()
		if !slices.Contains(uniq, p) {
			uniq = append(uniq, p)
		}
	}
	slices.SortFunc(uniq, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return uniq
}

// subnetComment is the part of a rule's comment that names its subnet;
// a rule with that prefix and another ending is an out-of-date one.
func subnetComment(network string, subnet netip.Prefix) string {
	return comment(network) + " " + subnet.String()
}

func comment(network string) string { return "netns-cni:" + network }

// shortHash names things whose names are length-limited.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// ErrBusy means another plugin held the network's NAT lock too long.
var ErrBusy = errors.New("nat lock busy")

// Lock serializes rule changes of one network among plugin processes on
// this host: the check "was that the network's last container?" and the
// removal that follows must not interleave with an ADD's Ensure. The lock
// is an abstract unix socket, which lives in the network namespace the
// rules live in and vanishes with a killed holder: no file, never stale.
func Lock(network string, timeout time.Duration) (unlock func(), err error) {
	return LockName("nat/"+network, timeout)
}

// LockName is Lock for any name: the bridge plugin locks its bridge with
// it while it creates, attaches to or removes it.
//
// The holder binds the name and listens on it; a waiter connects and
// sleeps until the holder's socket closes (its connection is reset then),
// so it wakes the moment the lock is free instead of polling. A killed
// holder's socket closes with it.
func LockName(name string, timeout time.Duration) (unlock func(), err error) {
	addr := &unix.SockaddrUnix{Name: "@netns-cni/" + shortHash(name)}
	deadline := time.Now().Add(timeout)
	for {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		err = unix.Bind(fd, addr)
		if err == nil {
			if err := unix.Listen(fd, 4096); err != nil {
				unix.Close(fd)
				return nil, fmt.Errorf("lock %s: %w", name, err)
			}
			return func() { unix.Close(fd) }, nil
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			unix.Close(fd)
			return nil, fmt.Errorf("lock %s: %w", name, err)
		}
		// Held: wait on a connection to the holder until it goes.
		left := time.Until(deadline)
		if left <= 0 {
			unix.Close(fd)
			return nil, fmt.Errorf("%w: %s, waited %v", ErrBusy, name, timeout)
		}
		if err := unix.Connect(fd, addr); err == nil {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLHUP}}
			_, _ = unix.Poll(fds, int(left.Milliseconds())+1)
		} else {
			// Between the holder's bind and listen, or just gone: look again.
			time.Sleep(50 * time.Microsecond)
		}
		unix.Close(fd)
	}
}
