// Package hostport forwards host ports to containers: the portMappings
// capability (runtimeConfig.portMappings, which containerd, CRI's hostPort,
// podman and nerdctl pass) with the semantics of the reference portmap
// plugin, built into the veth plugins so a chain needs no portmap exec.
//
// Traffic to a local address of the host (never traffic the host only
// forwards: the reference's nftables backend intercepted that until
// v1.9.0) on hostPort is DNATed to the container's address and
// containerPort, from outside and from the host itself. Traffic a
// container sends to its own mapped port (hairpin) and traffic from the
// host's 127.0.0.0/8 is masqueraded so the replies come back the same way;
// for the latter the host side of the container's link gets route_localnet
// (IPv4 only, as in the reference: the kernel never routes ::1), and a
// guard drops what arrives there for 127.0.0.0/8 without being DNATed, so
// containers cannot reach the host's loopback services through it
// (the reference portmap leaves that open; kube-proxy guards it the same
// way).
//
// The mappings are plain data (Plan), testable without root. Two backends
// keep them per network, beside the network's masquerade rules: nftables
// over netlink, where they are elements of maps that a fixed handful of
// rules look up, so the cost of an ADD or DEL does not grow with the
// mappings on the node; and iptables, a rule per mapping.
package hostport

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Mapping is one entry of runtimeConfig.portMappings.
type Mapping struct {
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
	// HostIP limits the mapping to one local address of the host; empty,
	// 0.0.0.0 or :: means every local address (of that family for the
	// unspecified addresses).
	HostIP string `json:"hostIP,omitempty"`
}

// ErrPortTaken means another attachment holds the host port: CNI code 7.
var ErrPortTaken = errors.New("host port taken")

// Protocols by name, as the mappings give them (any case).
var protocols = map[string]uint8{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// ProtoName is the name of an IP protocol number of Protocols.
func ProtoName(p uint8) string {
	for n, v := range protocols {
		if v == p {
			return n
		}
	}
	return fmt.Sprint(p)
}

// Validate checks mappings, each error naming its key
// ("runtimeConfig.portMappings[1].hostPort"). Two mappings of one host
// port and protocol on one host address, to different targets, conflict.
func Validate(ms []Mapping) []error {
	var errs []error
	key := func(i int, k string) string { return fmt.Sprintf(`"runtimeConfig.portMappings[%d].%s"`, i, k) }
	seen := map[Entry]int{} // forwards without their targets, by mapping
	for i, m := range ms {
		n := len(errs)
		if m.HostPort < 1 || m.HostPort > 65535 {
			errs = append(errs, fmt.Errorf("%s: must be 1-65535, got %d", key(i, "hostPort"), m.HostPort))
		}
		if m.ContainerPort < 1 || m.ContainerPort > 65535 {
			errs = append(errs, fmt.Errorf("%s: must be 1-65535, got %d", key(i, "containerPort"), m.ContainerPort))
		}
		if _, ok := protocols[strings.ToLower(m.Protocol)]; !ok && m.Protocol != "" {
			errs = append(errs, fmt.Errorf(`%s: must be "tcp", "udp" or "sctp", got %q`, key(i, "protocol"), m.Protocol))
		}
		if a, err := netip.ParseAddr(m.HostIP); err != nil && m.HostIP != "" {
			errs = append(errs, fmt.Errorf("%s: %q is not an IP address", key(i, "hostIP"), m.HostIP))
		} else if a.Zone() != "" {
			// A forward matches the destination address alone: the zone
			// would be dropped, the mapping taking every link's fe80::1.
			errs = append(errs, fmt.Errorf("%s: %q has a zone, which a forward cannot match; give the address without it", key(i, "hostIP"), m.HostIP))
		}
		if len(errs) > n {
			continue
		}
		// Planned against placeholder addresses of both families, two
		// mappings clash where they forward the same thing differently.
		for _, e := range Plan([]Mapping{m}, []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()}) {
			e.Pod, e.ContainerPort = netip.Addr{}, 0
			if j, ok := seen[e]; ok && ms[j].ContainerPort != m.ContainerPort {
				errs = append(errs, fmt.Errorf("%s: %d/%s is forwarded by [%d] to container port %d already",
					key(i, "hostPort"), m.HostPort, ProtoName(e.Proto), j, ms[j].ContainerPort))
				break
			}
			seen[e] = i
		}
	}
	return errs
}

// Entry is one forward: traffic for HostIP (any local address of Pod's
// family when invalid) and HostPort over Proto goes to Pod:ContainerPort.
type Entry struct {
	Proto         uint8
	HostIP        netip.Addr
	HostPort      uint16
	Pod           netip.Addr
	ContainerPort uint16
}

// String is "8080/tcp -> 10.66.0.5:80", "192.0.2.1:53/udp -> [fd66::5]:53".
func (e Entry) String() string {
	host := fmt.Sprint(e.HostPort)
	if e.HostIP.IsValid() {
		host = netip.AddrPortFrom(e.HostIP, e.HostPort).String()
	}
	return fmt.Sprintf("%s/%s -> %s", host, ProtoName(e.Proto), netip.AddrPortFrom(e.Pod, e.ContainerPort))
}

// Plan returns the forwards of an attachment with addresses addrs: each
// mapping goes to the first address of each family it applies to (the
// reference's choice), a HostIP restricting it to the HostIP's family.
// Duplicates go; the order is stable.
func Plan(ms []Mapping, addrs []netip.Addr) []Entry {
	var pod4, pod6 netip.Addr
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a.Is4() && !pod4.IsValid():
			pod4 = a
		case a.Is6() && !pod6.IsValid():
			pod6 = a
		}
	}
	var out []Entry
	for _, m := range ms {
		proto, ok := protocols[strings.ToLower(m.Protocol)]
		if m.Protocol == "" {
			proto, ok = unix.IPPROTO_TCP, true
		}
		if !ok {
			continue
		}
		var host netip.Addr
		if m.HostIP != "" {
			h, err := netip.ParseAddr(m.HostIP)
			if err != nil {
				continue
			}
			host = h.Unmap()
		}
		for _, pod := range []netip.Addr{pod4, pod6} {
			if !pod.IsValid() || host.IsValid() && host.Is4() != pod.Is4() {
				continue
			}
			e := Entry{Proto: proto, HostPort: uint16(m.HostPort), Pod: pod, ContainerPort: uint16(m.ContainerPort)}
			if host.IsValid() && !host.IsUnspecified() {
				e.HostIP = host
			}
			if !slices.Contains(out, e) {
				out = append(out, e)
			}
		}
	}
	return out
}

// Pods are the distinct container addresses of entries.
func Pods(es []Entry) []netip.Addr {
	var out []netip.Addr
	for _, e := range es {
		if !slices.Contains(out, e.Pod) {
			out = append(out, e.Pod)
		}
	}
	return out
}

// Spec is what one attachment asks for.
type Spec struct {
	// Network is the network's key (netconf.Key).
	Network string
	// Owner names the attachment: netconf.Key(container ID) + "/" + ifname.
	Owner   string
	Entries []Entry
	// HostIf is the host side of the attachment's link (the bridge, or
	// the host veth), which gets route_localnet for forwards from the
	// host's 127.0.0.0/8.
	HostIf string
	// Shared says HostIf serves other attachments too (a bridge): it is
	// not the attachment's own to hand back.
	Shared bool
	// Live tells whether the attachment named owner holds addr: a forward
	// found in the way whose owner no longer holds its address is stale
	// (its DEL never came) and is replaced. Nil: nothing is stale.
	Live func(owner string, addr netip.Addr) bool
}

// guardOwner is the owner the loopback guard of s.HostIf is recorded
// under: the attachment, or no single one for a shared interface (a
// bridge), which goes with the network.
func (s Spec) guardOwner() string {
	if s.Shared {
		return sharedOwner
	}
	return s.Owner
}

// Backend keeps the forwards of networks.
type Backend interface {
	// Add puts the spec's forwards in place, replacing stale ones in the
	// way; ErrPortTaken when a live attachment holds one. Adding what is
	// in place already is no error.
	Add(s Spec) error
	// Remove deletes the forwards of s.Owner and returns them: those of
	// s.Entries when it is not nil, else all the owner has (listed). pods
	// are the attachment's addresses, whose hairpin state goes too; s.HostIf
	// loses its route_localnet mark unless s.Shared.
	Remove(s Spec, pods []netip.Addr) ([]Entry, error)
	// Check reports the spec's forwards missing or not the owner's.
	Check(s Spec) error
	// Collect deletes the forwards of owners keep rejects and returns them.
	Collect(network string, keep func(owner string) bool) ([]Entry, error)
	// Drop deletes every forward of the network and the rules around them,
	// and turns route_localnet back off where the backend turned it on.
	Drop(network string) error
	// List returns the network's forwards by owner.
	List(network string) (map[string][]Entry, error)
}

// Backends by their config name (ipMasqBackend).
const (
	NFTables = "nftables"
	IPTables = "iptables"
)

// New returns the backend named kind ("" means nftables).
func New(kind string) (Backend, error) {
	switch kind {
	case "", NFTables:
		return nftBackend{}, nil
	case IPTables:
		return iptBackend{}, nil
	}
	return nil, fmt.Errorf("unknown backend %q", kind)
}

// taken is the error for a forward a live attachment holds.
func taken(e Entry, owner, network string) error {
	return fmt.Errorf("%w: %s/%s is forwarded to %s by attachment %s of network %s; pick another hostPort, or DEL that container (netns-cni audit shows whether it is gone)",
		ErrPortTaken, hostString(e), ProtoName(e.Proto), netip.AddrPortFrom(e.Pod, e.ContainerPort), owner, network)
}

func hostString(e Entry) string {
	if e.HostIP.IsValid() {
		return netip.AddrPortFrom(e.HostIP, e.HostPort).String()
	}
	return fmt.Sprintf("port %d", e.HostPort)
}
