// Package inspect reads a node's container networking as it really is —
// the conflists, each network's host-local store, the host links and
// their aliases, netns-cni's NAT state, libcni's cache — and tells what is
// attached and what is wrong. It serves the operator command (cmd/netns-
// cni). It works on the reference plugins' attachments too: they share the
// store layout and the cache.
//
// Reading changes nothing: a store is read without its lock and without
// the repairs opening it would run.
package inspect

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/filter"
	"github.com/netns-cni/netns-cni/pkg/hostport"
	"github.com/netns-cni/netns-cni/pkg/ipam"
	"github.com/netns-cni/netns-cni/pkg/nat"
	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/plugin"
)

// Ours are the plugin types netns-cni ships.
var Ours = []string{"veth-ptp", "bridge-nat", "loopback"}

// Network is one network of the configuration directory.
type Network struct {
	Name string `json:"name"`
	File string `json:"file"`
	// Type is the main plugin's (the first with an ipam, or the first).
	Type    string   `json:"type"`
	Plugins []string `json:"plugins"`
	// Store is the host-local store, nil when the network has none.
	Store         *ipam.Config `json:"-"`
	StoreDir      string       `json:"store,omitempty"`
	IPMasq        bool         `json:"ipMasq"`
	IPMasqBackend string       `json:"ipMasqBackend,omitempty"`
	// UnknownKeys are the keys of netns-cni plugins' configs they ignore.
	UnknownKeys []string `json:"unknownKeys,omitempty"`
	// HostPorts: a netns-cni plugin takes the portMappings capability
	// (not a chained portmap).
	HostPorts bool   `json:"-"`
	Pools     []Pool `json:"pools,omitempty"`
	list      *libcni.NetworkConfigList
	// noMasq is nonMasqueradeCIDRs of netns-cni's plugin, parsed as the
	// plugin parses it: the masquerade rules' shape depends on it.
	noMasq []netip.Prefix
	// portBackends are the port mapping backends that hold forwards of
	// the network.
	portBackends []string
}

// Ours reports whether netns-cni's plugin is the network's main plugin.
func (n *Network) Ours() bool { return slices.Contains(Ours, n.Type) }

// Pool is one range set of a network: how full it is.
type Pool struct {
	Ranges string `json:"ranges"`
	Used   uint64 `json:"used"`
	Size   uint64 `json:"size"`
}

// Attachment is a container interface on a network, as the store, the
// host links and libcni's cache show it.
type Attachment struct {
	Network     string   `json:"network"`
	ContainerID string   `json:"containerID"`
	IfName      string   `json:"ifname"`
	Addresses   []string `json:"addresses,omitempty"`
	// HostLink is netns-cni's host end, "" when there is none.
	HostLink string `json:"hostLink,omitempty"`
	// Netns is the namespace libcni's cache names, "" when not cached.
	Netns       string    `json:"netns,omitempty"`
	NetnsExists bool      `json:"netnsExists"`
	Since       time.Time `json:"since,omitzero"`
	Cached      bool      `json:"cached"`
	// Ports are the host ports netns-cni forwards to it: "8080/tcp ->
	// 10.66.0.5:80", "192.0.2.1:53/udp -> [fd66::5]:53".
	Ports []string `json:"ports,omitempty"`
	// asked are the port mappings the runtime passed its ADD (libcni's
	// cache); portmap whether that ADD's conflist chained a portmap
	// plugin, which then made the forwards.
	asked   []hostport.Mapping
	portmap bool
}

// Live reports whether anything says the attachment's container still
// exists: its namespace, or a host end (a veth whose container end went
// with its namespace is gone too).
func (a *Attachment) Live() bool { return a.NetnsExists || a.HostLink != "" }

// Node is what Read found.
type Node struct {
	ConfDir, CacheDir string
	Networks          []*Network
	Attachments       []*Attachment
	// RetiredLinks are host links older versions retired and left.
	RetiredLinks []string
	// NATTables are netns-cni's nftables masquerade tables, by network key.
	NATTables []string
	// IPTChains are netns-cni's iptables chains (masquerade, FORWARD
	// acceptance, port mappings; both families) of configured networks,
	// by network key; StrayChains those of networks in no conflist, whose
	// names (hashes) cannot be told. Only iptables-nft's chains are seen
	// (read over netlink); iptables-legacy's are not.
	IPTChains   map[string][]string
	StrayChains []string
	BootTime    time.Time
	links       map[string]netconf.Attachment // host link name → alias
	// strayPorts are forwards whose owner is no attachment found.
	strayPorts []strayPorts
	// forwards are every forward read, by network and owner.
	forwards []forward
	// unreadable are conflists and stores that could not be read.
	unreadable []Problem
}

// forward is one forward of a network's attachment.
type forward struct {
	network, owner string
	e              hostport.Entry
}

// strayPorts are the forwards of one owner that Read matched to no
// attachment.
type strayPorts struct {
	network, owner string
	ports          []string
}

// Read reads the node. confDir is the runtime's CNI config directory,
// cacheDir libcni's cache directory (/var/lib/cni).
func Read(confDir, cacheDir string) (*Node, error) {
	n := &Node{ConfDir: confDir, CacheDir: cacheDir, BootTime: ipam.BootTime(), links: map[string]netconf.Attachment{}}
	// libcni takes a missing directory for an empty one; here that would
	// turn a mistyped --conf-dir into "nothing wrong".
	if fi, err := os.Stat(confDir); err != nil {
		return nil, fmt.Errorf("CNI config directory: %w; give the runtime's with --conf-dir", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("CNI config directory %s: not a directory; give the runtime's with --conf-dir", confDir)
	}
	if err := n.readConfigs(); err != nil {
		return nil, err
	}
	if err := n.readLinks(); err != nil {
		return nil, err
	}
	n.readNAT()
	byKey := map[[3]string]*Attachment{}
	get := func(network, id, ifname string) *Attachment {
		k := [3]string{network, id, ifname}
		if byKey[k] == nil {
			byKey[k] = &Attachment{Network: network, ContainerID: id, IfName: ifname}
		}
		return byKey[k]
	}
	for _, net := range n.Networks {
		if net.Store == nil {
			continue
		}
		rs, err := net.Store.ReadReservations()
		if err != nil {
			n.unreadable = append(n.unreadable, Problem{Kind: UnreadableStore, Network: net.Name, Detail: fmt.Sprintf("store %s: %v", net.StoreDir, err),
				Fix: "make the store readable: its attachments are not listed and nothing is repaired in it"})
			continue
		}
		for _, u := range net.Store.Usage(rs) {
			net.Pools = append(net.Pools, Pool{Ranges: u.Set.String(), Used: u.Used, Size: u.Size})
		}
		for _, r := range rs {
			a := get(net.Name, r.Owner.ID, r.Owner.IfName)
			a.Addresses = append(a.Addresses, r.Addr.String())
			if a.Since.IsZero() || r.Since.Before(a.Since) {
				a.Since = r.Since
			}
		}
	}
	cni := libcni.NewCNIConfigWithCacheDir(nil, cacheDir, nil)
	cached, err := cni.GetCachedAttachments("")
	if err != nil {
		return nil, fmt.Errorf("read libcni's cache in %s: %w", cacheDir, err)
	}
	for _, c := range cached {
		a := get(c.Network, c.ContainerID, c.IfName)
		a.Cached, a.Netns = true, c.NetNS
		if pm, ok := c.CapabilityArgs["portMappings"]; ok {
			if b, err := json.Marshal(pm); err == nil {
				_ = json.Unmarshal(b, &a.asked)
			}
		}
		if list, err := libcni.ConfListFromBytes(c.Config); err == nil {
			a.portmap = slices.ContainsFunc(list.Plugins, func(p *libcni.PluginConfig) bool { return p.Network.Type == "portmap" })
		}
		if ns, err := nsutil.Open(c.NetNS); err == nil {
			a.NetnsExists = true
			_ = ns.Close()
		}
	}
	for name, at := range n.links {
		var networks []string
		for _, net := range n.Networks {
			if netconf.Key(net.Name) == at.Network {
				networks = append(networks, net.Name)
			}
		}
		if len(networks) == 0 {
			// A network no conflist names (renamed or removed under a live
			// pod): listed by its name as the alias keeps it.
			networks = []string{at.Network}
		}
		for _, network := range networks {
			a := n.findByKey(byKey, network, at)
			if a == nil {
				a = get(network, at.ContainerID, at.IfName)
			}
			a.HostLink = name
		}
	}
	n.readPorts(byKey)
	for _, a := range byKey {
		sort.Strings(a.Addresses)
		n.Attachments = append(n.Attachments, a)
	}
	sort.Slice(n.Attachments, func(i, j int) bool {
		x, y := n.Attachments[i], n.Attachments[j]
		return x.Network+"\x00"+x.ContainerID+"\x00"+x.IfName < y.Network+"\x00"+y.ContainerID+"\x00"+y.IfName
	})
	return n, nil
}

// findByKey finds the attachment a host link's alias names (container ID
// as netconf.Key).
func (n *Node) findByKey(byKey map[[3]string]*Attachment, network string, at netconf.Attachment) *Attachment {
	for k, a := range byKey {
		if k[0] == network && at.Is(k[1], k[2]) {
			return a
		}
	}
	return nil
}

// readConfigs loads every conflist (and single conf) of the directory.
func (n *Node) readConfigs() error {
	files, err := libcni.ConfFiles(n.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return fmt.Errorf("read %s: %w", n.ConfDir, err)
	}
	// In the order libcni looks a network up by name (cnitool, podman,
	// Multus): every .conflist by file name, then the .conf and .json.
	sort.Slice(files, func(i, j int) bool {
		ci, cj := strings.HasSuffix(files[i], ".conflist"), strings.HasSuffix(files[j], ".conflist")
		if ci != cj {
			return ci
		}
		return files[i] < files[j]
	})
	for _, f := range files {
		list, err := ConfFile(f)
		if err != nil {
			// One broken file must not hide the rest of the node: audit
			// reports it.
			n.unreadable = append(n.unreadable, Problem{Kind: BrokenConfig, File: f, Detail: fmt.Sprintf("%s: %v", f, err),
				Fix: "correct the file: a runtime cannot load that network either"})
			continue
		}
		if first := n.network(list.Name); first != nil {
			// libcni (and so every runtime) loads a name from the first
			// file that has it: this one is never used.
			n.unreadable = append(n.unreadable, Problem{Kind: DuplicateNetwork, Network: list.Name, File: f,
				Detail: fmt.Sprintf("%s and %s both define network %q: runtimes that look a network up by name (libcni: cnitool, podman, Multus) load it from %s; containerd's and CRI-O's CRI take the first file of the directory by name, whichever network it holds",
					first.File, f, list.Name, first.File),
				Fix: "keep one file per network name (the one your runtime loads)"})
			continue
		}
		n.Networks = append(n.Networks, network(list, f))
	}
	return nil
}

// ConfFile loads one file of a CNI config directory as runtimes do: a
// .conflist as it is, a .conf or .json (one plugin's config: deprecated by
// libcni, still loaded by it and by runtimes) made a list of one.
func ConfFile(path string) (*libcni.NetworkConfigList, error) {
	if strings.HasSuffix(path, ".conflist") {
		return libcni.NetworkConfFromFile(path)
	}
	conf, err := libcni.ConfFromFile(path) //nolint:staticcheck // runtimes still load .conf files
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf) //nolint:staticcheck // as LoadNetworkConf does
}

func network(list *libcni.NetworkConfigList, file string) *Network {
	net := &Network{Name: list.Name, File: file, list: list}
	for _, p := range list.Plugins {
		net.Plugins = append(net.Plugins, p.Network.Type)
		// The plugin's config as the runtime hands it over: name and
		// version added to the conflist's entry.
		var m map[string]any
		_ = json.Unmarshal(p.Bytes, &m)
		m["name"], m["cniVersion"] = list.Name, list.CNIVersion
		stdin, _ := json.Marshal(m)
		if _, hasIPAM := m["ipam"]; (hasIPAM || net.Type == "") && p.Network.Type != "loopback" {
			net.Type = p.Network.Type
			if c, err := ipam.ParseStore(stdin); err == nil && c.Type == "host-local" {
				if full, errs := ipam.Parse(stdin, ""); len(errs) == 0 {
					c = full
				}
				net.Store, net.StoreDir = c, c.Dir()
			}
			if b, ok := m["ipMasq"].(bool); ok {
				net.IPMasq = b
			}
			net.IPMasqBackend, _ = m["ipMasqBackend"].(string)
		}
		if slices.Contains(Ours, p.Network.Type) && p.Network.Type != "loopback" {
			net.HostPorts = net.HostPorts || p.Network.Capabilities["portMappings"]
			var vc plugin.VethConf
			if json.Unmarshal(stdin, &vc) == nil && len(vc.Validate()) == 0 {
				net.noMasq = vc.NoMasq()
			}
		}
		switch p.Network.Type {
		case "veth-ptp":
			net.UnknownKeys = append(net.UnknownKeys, plugin.UnknownKeys(stdin, plugin.JSONKeys(&plugin.VethConf{}))...)
		case "bridge-nat":
			net.UnknownKeys = append(net.UnknownKeys, plugin.UnknownKeys(stdin, append(plugin.JSONKeys(&plugin.VethConf{}), BridgeKeys...))...)
		}
	}
	if net.Type == "" && len(net.Plugins) > 0 {
		net.Type = net.Plugins[0]
	}
	return net
}

// BridgeKeys are bridge-nat's keys beyond plugin.VethConf's (veth-ptp
// has none): what audit calls known. bridge-nat's tests hold this list to
// its Config.
var BridgeKeys = []string{"bridge", "isGateway", "isDefaultGateway", "forceAddress", "hairpinMode", "promiscMode",
	"vlan", "vlanTrunk", "preserveDefaultVlan", "enabledad", "macspoofchk", "disableContainerInterface",
	"portIsolation", "removeEmptyBridge"}

// readLinks reads the host's links: netns-cni's attachments by alias, and
// links older versions retired.
func (n *Node) readLinks() error {
	h, err := nsutil.CurrentHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		alias := l.Attrs().Alias
		if alias == netconf.RetiredAlias {
			n.RetiredLinks = append(n.RetiredLinks, l.Attrs().Name)
		} else if at, ok := netconf.ParseAlias(alias); ok {
			n.links[l.Attrs().Name] = at
		}
	}
	return nil
}

// readPorts reads the forwards of netns-cni's networks (pkg/hostport) and
// gives each to the attachment its owner names; those it names none of are
// strays.
func (n *Node) readPorts(byKey map[[3]string]*Attachment) {
	seen := map[string]bool{}
	for _, net := range n.Networks {
		if !net.Ours() || seen[net.Name] { // two files may name one network
			continue
		}
		seen[net.Name] = true
		// Both backends, whatever the config says now: ipMasqBackend may
		// have been switched under live pods.
		for _, kind := range []string{hostport.NFTables, hostport.IPTables} {
			b, _ := hostport.New(kind)
			if owners, err := b.List(netconf.Key(net.Name)); err == nil && len(owners) > 0 {
				n.givePorts(byKey, net.Name, owners)
				net.portBackends = append(net.portBackends, kind)
				for owner, entries := range owners {
					for _, e := range entries {
						n.forwards = append(n.forwards, forward{net.Name, owner, e})
					}
				}
			}
		}
	}
	sort.Slice(n.strayPorts, func(i, j int) bool {
		return n.strayPorts[i].network+n.strayPorts[i].owner < n.strayPorts[j].network+n.strayPorts[j].owner
	})
}

// givePorts gives each owner's forwards of network to the attachment the
// owner names; those it names none of are strays.
func (n *Node) givePorts(byKey map[[3]string]*Attachment, network string, owners map[string][]hostport.Entry) {
	for owner, entries := range owners {
		var ports []string
		for _, e := range entries {
			ports = append(ports, e.String())
		}
		sort.Strings(ports)
		found := false
		for k, a := range byKey {
			if k[0] == network && plugin.PortOwner(k[1], k[2]) == owner {
				a.Ports, found = append(a.Ports, ports...), true
			}
		}
		if !found {
			n.strayPorts = append(n.strayPorts, strayPorts{network, owner, ports})
		}
	}
}

// readNAT lists netns-cni's nftables tables and iptables(-nft) chains.
func (n *Node) readNAT() {
	unreadable := func(err error) {
		n.unreadable = append(n.unreadable, Problem{Kind: UnreadableRules, Detail: fmt.Sprintf("the host's nftables rules: %v", err),
			Fix: "run netns-cni as root with CAP_NET_ADMIN (kubectl debug node/…: --profile=sysadmin); until then NAT state, " +
				"FORWARD chains and host-port forwards are not audited"})
	}
	conn, err := nftables.New()
	if err != nil {
		unreadable(err)
		return
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		unreadable(err)
		return
	}
	for _, t := range tables {
		if key, ok := strings.CutPrefix(t.Name, "netns-cni-"); ok {
			n.NATTables = append(n.NATTables, key)
		}
	}
	sort.Strings(n.NATTables)
	owner := map[string]string{} // chain → network key
	keys := map[string]bool{}
	for _, net := range n.Networks {
		keys[netconf.Key(net.Name)] = true
	}
	for _, at := range n.links { // networks no conflist names, with live links
		keys[at.Network] = true
	}
	for key := range keys {
		for _, c := range append([]string{nat.ChainName(key), filter.ForwardChain(key)}, hostport.IPTablesChains(key)...) {
			owner[c] = key
		}
	}
	seen := map[string]bool{}
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := conn.ListChainsOfTableFamily(fam)
		if err != nil {
			continue
		}
		for _, c := range chains {
			if !strings.HasPrefix(c.Name, "NETNS-CNI-") || seen[c.Name] {
				continue
			}
			seen[c.Name] = true
			if key, ok := owner[c.Name]; ok {
				if n.IPTChains == nil {
					n.IPTChains = map[string][]string{}
				}
				n.IPTChains[key] = append(n.IPTChains[key], c.Name)
			} else {
				n.StrayChains = append(n.StrayChains, c.Name)
			}
		}
	}
	for _, cs := range n.IPTChains {
		sort.Strings(cs)
	}
	sort.Strings(n.StrayChains)
}

// network returns the configured network of that name, or nil.
func (n *Node) network(name string) *Network {
	for _, net := range n.Networks {
		if net.Name == name {
			return net
		}
	}
	return nil
}

// Problem is one thing audit found wrong.
type Problem struct {
	Kind        string `json:"kind"`
	Network     string `json:"network,omitempty"`
	ContainerID string `json:"containerID,omitempty"`
	IfName      string `json:"ifname,omitempty"`
	// File is the configuration file a problem is in (broken-config,
	// duplicate-network).
	File   string `json:"file,omitempty"`
	Detail string `json:"detail"`
	// Fix says what repair does, or what an operator should; Repairable
	// whether repair does it.
	Fix        string `json:"fix"`
	Repairable bool   `json:"repairable"`
	link       string
	owner      string // of stray forwards
}

// The kinds of problems.
const (
	OrphanReservation  = "orphan-reservation"
	Unverified         = "reservation-unverified"
	BeforeBoot         = "reservation-before-boot"
	StaleCache         = "stale-cache"
	LinkNoReservation  = "link-without-reservation"
	NATWithoutAttached = "nat-without-attachment"
	RetiredLink        = "retired-link"
	PoolNearlyFull     = "pool-nearly-full"
	UnknownKey         = "unknown-key"
	PortsWithoutOwner  = "port-mappings-without-attachment"
	BrokenConfig       = "broken-config"
	UnreadableStore    = "unreadable-store"
	UnreadableRules    = "unreadable-rules"
	DuplicateNetwork   = "duplicate-network"
	RulesMissing       = "rules-missing"
	PortConflict       = "port-conflict"
	Unconfigured       = "network-not-configured"
	UnconfiguredStore  = "store-without-network"
	DuplicateAddress   = "duplicate-address"
	HostRouteMissing   = "host-route-missing"
)

// Audit lists what is wrong on the node, in a stable order.
func (n *Node) Audit() []Problem {
	out := slices.Clone(n.unreadable)
	for _, a := range n.Attachments {
		net := n.network(a.Network)
		p := Problem{Network: a.Network, ContainerID: a.ContainerID, IfName: a.IfName}
		switch {
		case net == nil && a.HostLink != "":
			p.Kind, p.Detail = Unconfigured, fmt.Sprintf("host link %s is an attachment of network %s, which no conflist in %s names (renamed or removed while the pod ran)",
				a.HostLink, a.Network, n.ConfDir)
			p.Fix = fmt.Sprintf("a DEL through another network's conflist leaves it; once its container is gone, put the network's conflist back and run repair, or delete %s and the network's rules and store by hand",
				a.HostLink)
		case len(a.Addresses) > 0 && !a.Live() && !a.Since.IsZero() && a.Since.Before(n.BootTime):
			p.Kind, p.Detail = BeforeBoot, fmt.Sprintf("%s reserved %s, before the last boot (%s): its container is gone",
				strings.Join(a.Addresses, ", "), a.Since.Format(time.RFC3339), n.BootTime.Format(time.RFC3339))
		case len(a.Addresses) > 0 && !a.Live() && !a.Cached:
			// Nothing says the container is gone: a reference plugin's pod
			// has a host link netns-cni cannot tell from others, and without
			// a cache entry there is no namespace to look for.
			p.Kind, p.Detail = Unverified, fmt.Sprintf("%s reserved, with no netns-cni host link and no libcni cache entry: nothing on the node says whether its container is gone (a reference plugin's pod has no link netns-cni recognises)",
				strings.Join(a.Addresses, ", "))
			p.Fix = fmt.Sprintf("if no container uses %s any more: cnitool del %s --container-id %s --ifname %s", strings.Join(a.Addresses, ", "), a.Network, a.ContainerID, a.IfName)
		case len(a.Addresses) > 0 && !a.Live():
			p.Kind, p.Detail = OrphanReservation, fmt.Sprintf("%s reserved, but no host link, and %s", strings.Join(a.Addresses, ", "), cacheState(a))
		case a.Cached && !a.NetnsExists && a.HostLink == "":
			p.Kind, p.Detail = StaleCache, fmt.Sprintf("libcni's cache names namespace %q, which is gone", a.Netns)
		case a.HostLink != "" && len(a.Addresses) == 0 && net != nil && net.Store != nil:
			p.Kind, p.Detail = LinkNoReservation, fmt.Sprintf("host link %s, but no address reserved in %s", a.HostLink, net.StoreDir)
			p.Fix = fmt.Sprintf("the container still exists: DEL it through its runtime, or: cnitool del %s --container-id %s --ifname %s", a.Network, a.ContainerID, a.IfName)
		default:
			continue
		}
		if p.Fix == "" {
			p.Repairable = net != nil
			p.Fix = fmt.Sprintf("DEL through %s (releases the addresses and what the plugin made for them)", netFile(net))
		}
		out = append(out, p)
	}
	for _, l := range n.RetiredLinks {
		out = append(out, Problem{Kind: RetiredLink, Detail: "host link " + l + " retired by an older netns-cni and never deleted",
			Fix: "delete the link", Repairable: true, link: l})
	}
	state := map[string][]string{} // network key → what it has
	for _, key := range n.NATTables {
		state[key] = append(state[key], "nftables table inet "+nat.TableName(key))
	}
	for key, cs := range n.IPTChains {
		state[key] = append(state[key], "iptables chains "+strings.Join(cs, ", "))
	}
	keys := make([]string, 0, len(state))
	for key := range state {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if n.hasLinks(key) {
			continue
		}
		p := Problem{Kind: NATWithoutAttached, Network: key, Detail: strings.Join(state[key], "; ") + ", but no attachment of the network is on this host",
			Fix: "remove the network's masquerade, FORWARD and port-mapping rules", Repairable: true}
		for _, net := range n.Networks {
			if netconf.Key(net.Name) == key {
				p.Network = net.Name
			}
		}
		out = append(out, p)
	}
	out = append(out, n.missingRules()...)
	for _, c := range n.StrayChains {
		out = append(out, Problem{Kind: NATWithoutAttached, Detail: "iptables chain " + c + " of a network in no conflist (its name is a hash netns-cni cannot reverse)",
			Fix: "put the network's conflist back and run repair, or remove the chain and the jumps to it by hand (iptables-save | grep " + c + ")"})
	}
	out = append(out, n.portConflicts()...)
	for _, sp := range n.strayPorts {
		out = append(out, Problem{Kind: PortsWithoutOwner, Network: sp.network,
			Detail: fmt.Sprintf("host ports %s forwarded for %s, which has no attachment on this host", strings.Join(sp.ports, ", "), sp.owner),
			Fix:    "remove the forwards", Repairable: true, owner: sp.owner})
	}
	out = append(out, n.unconfiguredStores()...)
	out = append(out, n.addressProblems()...)
	for _, net := range n.Networks {
		for _, pool := range net.Pools {
			if pool.Size > 0 && pool.Used*10 >= pool.Size*9 {
				out = append(out, Problem{Kind: PoolNearlyFull, Network: net.Name, Detail: fmt.Sprintf("range set %s: %d of %d addresses used", pool.Ranges, pool.Used, pool.Size),
					Fix: "widen the range, or free addresses (repair, GC, deleting containers)"})
			}
		}
		for _, k := range net.UnknownKeys {
			out = append(out, Problem{Kind: UnknownKey, Network: net.Name, Detail: net.File + ": " + k, Fix: "correct or remove the key"})
		}
	}
	return out
}

// addressProblems finds live attachments that cannot all get their
// traffic: one address held by two of them (two networks handing out the
// same subnet), and veth-ptp attachments whose host route to an address
// is gone or leads elsewhere (what versions before 2026-11-30 did to a
// pod when another network's pod got its address). CHECK through the
// runtime says the same for each.
func (n *Node) addressProblems() []Problem {
	var out []Problem
	holders := map[string][]*Attachment{}
	for _, a := range n.Attachments {
		if a.Live() {
			for _, addr := range a.Addresses {
				holders[addr] = append(holders[addr], a)
			}
		}
	}
	for _, addr := range slices.Sorted(maps.Keys(holders)) {
		if hs := holders[addr]; len(hs) > 1 {
			names := make([]string, len(hs))
			for i, a := range hs {
				names[i] = fmt.Sprintf("%s/%s of network %s", a.ContainerID, a.IfName, a.Network)
			}
			out = append(out, Problem{Kind: DuplicateAddress, Network: hs[0].Network,
				Detail: fmt.Sprintf("%s is held by %s: only one of them gets its traffic", addr, strings.Join(names, " and ")),
				Fix:    "give each network a subnet of its own, then restart the pods of one"})
		}
	}
	h, err := nsutil.CurrentHandle()
	if err != nil {
		return out
	}
	defer h.Close()
	routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return out
	}
	via := map[string][]int{} // host route's destination → link indexes
	for _, r := range routes {
		if r.Dst != nil {
			if ones, bits := r.Dst.Mask.Size(); ones == bits {
				via[r.Dst.IP.String()] = append(via[r.Dst.IP.String()], r.LinkIndex)
			}
		}
	}
	for _, a := range n.Attachments {
		if a.HostLink == "" || n.links[a.HostLink].Plugin != "veth-ptp" {
			continue
		}
		l, err := h.LinkByName(a.HostLink)
		if err != nil {
			continue
		}
		for _, addr := range a.Addresses {
			if ip, err := netip.ParseAddr(addr); err != nil || slices.Contains(via[ip.String()], l.Attrs().Index) {
				continue
			}
			out = append(out, Problem{Kind: HostRouteMissing, Network: a.Network, ContainerID: a.ContainerID, IfName: a.IfName,
				Detail: fmt.Sprintf("the host has no route to %s through %s: the pod gets no traffic from the host or beyond it", addr, a.HostLink),
				Fix:    "restart the pod (its route is made with it); CHECK through the runtime says the same"})
		}
	}
	return out
}

// unconfiguredStores finds, beside the stores of the configured networks
// (in each dataDir they use), stores of networks no conflist names that
// still hold reservations: what a network renamed or removed under live
// pods leaves once they are gone, which no DEL through the new name
// releases. Reported only: another runtime with a config directory of
// its own may keep its stores there too.
func (n *Node) unconfiguredStores() []Problem {
	dirs := map[string]bool{}  // dataDirs
	known := map[string]bool{} // stores of configured networks
	for _, net := range n.Networks {
		if net.StoreDir != "" {
			dirs[filepath.Dir(net.StoreDir)], known[net.StoreDir] = true, true
		}
	}
	var out []Problem
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			store := filepath.Join(dir, e.Name())
			if !e.IsDir() || known[store] {
				continue
			}
			var held []string
			files, _ := os.ReadDir(store)
			for _, f := range files {
				if _, err := netip.ParseAddr(f.Name()); err == nil {
					held = append(held, f.Name())
				}
			}
			if len(held) == 0 {
				continue
			}
			out = append(out, Problem{Kind: UnconfiguredStore, Network: e.Name(),
				Detail: fmt.Sprintf("store %s holds %d reservation(s) (%s) of network %s, which no conflist in %s names (renamed or removed while pods ran, or another runtime's network)",
					store, len(held), strings.Join(held, ", "), e.Name(), n.ConfDir),
				Fix: "if no container of that network is left (netns-cni list shows live ones), delete the directory; or put the network's conflist back and run repair"})
		}
	}
	return out
}

// portConflicts finds host ports two networks forward (hostport.Clash):
// only one of them gets the traffic, whichever's chain runs first. ADD
// refuses such a second forward; older versions did not.
func (n *Node) portConflicts() []Problem {
	var out []Problem
	for i, a := range n.forwards {
		for _, b := range n.forwards[i+1:] {
			if a.network != b.network && hostport.Clash(a.e, b.e) {
				out = append(out, Problem{Kind: PortConflict, Network: a.network,
					Detail: fmt.Sprintf("%s (%s of network %s) and %s (%s of network %s) forward the same host port: only one gets the traffic",
						a.e, a.owner, a.network, b.e, b.owner, b.network),
					Fix: "restart one of the two pods with another hostPort (netns-cni list shows them)"})
			}
		}
	}
	return out
}

// missingRules finds live attachments of netns-cni whose rules are gone
// (a firewall reload that flushed the ruleset, say): the network's
// masquerade rules with ipMasq, the host ports the runtime asked for, and
// the rules that lead to the forwards that are there. Not repaired: the
// network's next ADD puts its masquerade rules back (and, with host ports,
// what leads to the forwards), but an attachment's forwards only come back
// with its pod.
func (n *Node) missingRules() []Problem {
	if slices.ContainsFunc(n.unreadable, func(p Problem) bool { return p.Kind == UnreadableRules }) {
		return nil
	}
	var out []Problem
	for _, net := range n.Networks {
		key := netconf.Key(net.Name)
		for _, kind := range net.portBackends {
			b, _ := hostport.New(kind)
			if err := b.Check(hostport.Spec{Network: key}); err != nil {
				out = append(out, Problem{Kind: RulesMissing, Network: net.Name,
					Detail: fmt.Sprintf("host ports are forwarded (%s), but %v: no traffic reaches the forwards", kind, err),
					Fix:    "the network's next ADD with a port mapping puts the rules back (start a pod with a host port on it)"})
			}
		}
		var live []*Attachment
		for _, a := range n.Attachments {
			if a.Network != net.Name || a.HostLink == "" {
				continue
			}
			live = append(live, a)
			// The forwards ADD made of them: none of a family the
			// attachment has no address of (a "hostIP": "::" mapping to an
			// IPv4-only pod).
			var addrs []netip.Addr
			for _, s := range a.Addresses {
				if addr, err := netip.ParseAddr(s); err == nil {
					addrs = append(addrs, addr)
				}
			}
			if net.HostPorts && len(hostport.Plan(a.asked, addrs)) > 0 && !a.portmap && len(a.Ports) == 0 {
				out = append(out, Problem{Kind: RulesMissing, Network: net.Name, ContainerID: a.ContainerID, IfName: a.IfName,
					Detail: fmt.Sprintf("the runtime asked for %d host port mapping(s), and no forward of them exists", len(a.asked)),
					Fix:    "restart the pod (its forwards are made with it); CHECK through the runtime says the same"})
			}
		}
		if !net.Ours() || !net.IPMasq || len(live) == 0 || net.Store == nil {
			continue
		}
		// Each backend's own check (the subnets' rules, both families):
		// the rules may be in either, ipMasqBackend having been switched
		// under live pods.
		spec := nat.Spec{Network: key, Subnets: liveSubnets(net.Store.Subnets(), live), NoMasq: net.noMasq}
		if len(spec.Subnets) == 0 {
			continue
		}
		// The configured backend's finding is the one named: the other's
		// rules are only looked for as the ones an earlier ipMasqBackend
		// left.
		configured := nat.NFTables
		if net.IPMasqBackend == nat.IPTables {
			configured = nat.IPTables
		}
		var lacks string
		for _, kind := range []string{configured, map[string]string{nat.NFTables: nat.IPTables, nat.IPTables: nat.NFTables}[configured]} {
			if b, err := nat.New(kind); err == nil {
				err := b.Check(spec)
				if err == nil {
					lacks = ""
					break
				}
				if lacks == "" {
					lacks = err.Error()
				}
			}
		}
		if lacks != "" {
			out = append(out, Problem{Kind: RulesMissing, Network: net.Name,
				Detail: fmt.Sprintf("ipMasq, %d live attachment(s), but %s: their traffic leaves the node unmasqueraded", len(live), lacks),
				Fix:    "the network's next ADD puts the masquerade rules back (start a pod on it)"})
		}
	}
	return out
}

// liveSubnets are the subnets the live attachments have addresses in:
// those ADD put masquerade rules for (a range set's other subnets, or
// runtimeConfig.ipRanges' defaults, may have none).
func liveSubnets(subnets []netip.Prefix, live []*Attachment) []netip.Prefix {
	var out []netip.Prefix
	for _, a := range live {
		for _, s := range a.Addresses {
			addr, err := netip.ParseAddr(s)
			if err != nil {
				continue
			}
			for _, p := range subnets {
				if p.Contains(addr) && !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

func netFile(net *Network) string {
	if net == nil {
		return "no config (the network is in no conflist: DEL it by hand with its old config)"
	}
	return net.File
}

func cacheState(a *Attachment) string {
	if a.Netns == "" {
		return "a cache entry without a namespace"
	}
	return fmt.Sprintf("its namespace %s is gone", a.Netns)
}

// hasLinks reports whether host links of the network with key exist.
func (n *Node) hasLinks(key string) bool {
	for _, at := range n.links {
		if at.Network == key {
			return true
		}
	}
	return false
}

// Repair fixes p when it is repairable: an attachment whose container is
// gone is DELed through its network's plugins, exactly as a runtime would
// (libcni, with the cached result when there is one), so the plugins take
// their own locks and remove everything they made; a retired link is
// deleted; NAT state of a network without attachments is removed under
// the network's lock. It never touches an attachment that something says
// is alive: that is checked again right before.
func (n *Node) Repair(p Problem, cniPath []string) error {
	if !p.Repairable {
		return errors.New("not repairable: " + p.Fix)
	}
	switch p.Kind {
	case RetiredLink:
		h, err := nsutil.CurrentHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		return netconf.DelLink(h, p.link)
	case PortsWithoutOwner:
		net := &plugin.Network{Name: p.Network}
		if cfg := n.network(p.Network); cfg != nil {
			net.Backend = cfg.IPMasqBackend
		}
		_, err := net.UnmapPorts(hostport.Spec{Network: netconf.Key(p.Network), Owner: p.owner}, nil, true)
		return err
	case NATWithoutAttached:
		// Both backends: the rules are in whichever an earlier config named.
		return (&plugin.Network{Name: p.Network}).RemoveAnyIfUnused()
	}
	fresh, err := Read(n.ConfDir, n.CacheDir)
	if err != nil {
		return err
	}
	for _, a := range fresh.Attachments {
		if a.Network == p.Network && a.ContainerID == p.ContainerID && a.IfName == p.IfName && a.Live() {
			return fmt.Errorf("%s/%s on %s is alive now (namespace or host link): left alone", p.ContainerID, p.IfName, p.Network)
		}
	}
	list, err := n.network(p.Network).adopted()
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(cniPath, n.CacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: p.ContainerID, IfName: p.IfName}
	if rt.IfName == "" {
		rt.IfName = "eth0" // a legacy reservation names no interface
	}
	return cni.DelNetworkList(context.Background(), list, rt)
}

// adoptedTypes are netns-cni's plugins that remove what the reference
// ones of those types made (pkg/adopt) — which the reference's own DEL does
// not when the namespace is gone: it leaks its masquerade chain.
var adoptedTypes = map[string]string{"ptp": "veth-ptp", "bridge": "bridge-nat"}

// adopted is the network's config list with a reference ptp or bridge
// replaced by netns-cni's plugin of the same keys, for repair's DEL.
func (n *Network) adopted() (*libcni.NetworkConfigList, error) {
	if _, ok := adoptedTypes[n.Type]; !ok {
		return n.list, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(n.list.Bytes, &raw); err != nil {
		return nil, err
	}
	plugins, _ := raw["plugins"].([]any)
	for _, p := range plugins {
		if m, ok := p.(map[string]any); ok {
			if t, ok := adoptedTypes[fmt.Sprint(m["type"])]; ok {
				m["type"] = t
			}
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromBytes(b)
}
