// Package ipam is netns-cni's host-local IP address store, called in-process
// by the plugins. It reads the reference host-local configuration and keeps
// the reference on-disk layout under <dataDir>/<network>/ — one file per
// reserved address holding "<containerID>\r\n<ifname>", last_reserved_ip.N
// cursors and a flock'd "lock" file — so a node can move between the
// reference plugins and these without losing a reservation. On top of that
// it keeps an owner index (lookups and releases never scan the store), makes
// every write atomic (a killed plugin leaves no half-written reservation),
// bounds lock waits, reclaims reservations left from before a reboot, and
// implements GC, STATUS and CHECK.
//
// It is plain Go on net/netip: no netlink, no namespaces, no root needed.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultDataDir is where host-local keeps its stores unless dataDir says.
const DefaultDataDir = "/var/lib/cni/networks"

// DefaultLockTimeout bounds the wait for the store lock; past it the caller
// gets ErrBusy (CNI code 11) instead of hanging.
const DefaultLockTimeout = 10 * time.Second

// Config is the parsed, validated host-local configuration of one network.
type Config struct {
	// Network is the network name: the store's directory under DataDir.
	Network string
	// CNIVersion is the config's version, for the one-address-per-family
	// rule of 0.1.0/0.2.0.
	CNIVersion string
	// Type is ipam.type; anything but "host-local" is delegated by the caller.
	Type string
	// RangeSets: one address is taken from each set.
	RangeSets []RangeSet
	// Routes go into the result as they are.
	Routes []*types.Route
	// DataDir is the absolute directory holding the network's store.
	DataDir string
	// ResolvConf, when set, is read for the result's DNS.
	ResolvConf string
	// Requested are addresses the runtime asked for (CNI_ARGS IP=,
	// args.cni.ips, runtimeConfig.ips), each to be taken from the set that
	// contains it.
	Requested []netip.Addr
	// LockTimeout bounds lock waits (DefaultLockTimeout when zero).
	LockTimeout time.Duration
	// Adjusted notes what Parse changed from the config as written (a range
	// end on an IPv4 broadcast address, say), each naming its key: for a
	// warning in the log.
	Adjusted []string
}

// rawRange is a range as it appears in JSON.
type rawRange struct {
	Subnet     string `json:"subnet"`
	RangeStart string `json:"rangeStart,omitempty"`
	RangeEnd   string `json:"rangeEnd,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
}

// rawConfig is the part of a plugin's stdin that host-local reads: the whole
// netconf, since runtimeConfig and args live at the top level.
type rawConfig struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	IPAM       *struct {
		Type       string         `json:"type"`
		Ranges     [][]rawRange   `json:"ranges"`
		Routes     []*types.Route `json:"routes"`
		DataDir    string         `json:"dataDir"`
		ResolvConf string         `json:"resolvConf"`
		rawRange                  // legacy single range at the ipam level
	} `json:"ipam"`
	RuntimeConfig struct {
		IPRanges [][]rawRange `json:"ipRanges"`
		IPs      []string     `json:"ips"`
	} `json:"runtimeConfig"`
	Args *struct {
		CNI *struct {
			IPs []string `json:"ips"`
		} `json:"cni"`
	} `json:"args"`
}

// ErrNoIPAM is returned by Parse when the config has no "ipam" object, or
// an empty one (a bridge in L2 mode, say); callers decide whether that is
// allowed.
var ErrNoIPAM = errors.New(`"ipam": missing`)

// Parse reads the IPAM part of a network config (the plugin's whole stdin)
// and the CNI_ARGS string. It returns every problem it finds, each naming
// its key. For a type other than host-local only Type and Network are set:
// the caller delegates to that plugin, which reads the config itself.
func Parse(stdin []byte, cniArgs string) (*Config, []error) {
	var raw rawConfig
	if err := json.Unmarshal(stdin, &raw); err != nil {
		return nil, []error{fmt.Errorf("decode ipam config: %w", err)}
	}
	var empty struct {
		IPAM map[string]json.RawMessage `json:"ipam"`
	}
	_ = json.Unmarshal(stdin, &empty)
	if raw.IPAM == nil || len(empty.IPAM) == 0 {
		return nil, []error{ErrNoIPAM} // absent, or "ipam": {} (L2 only)
	}
	c := &Config{Network: raw.Name, CNIVersion: raw.CNIVersion, Type: raw.IPAM.Type, LockTimeout: DefaultLockTimeout}
	if c.Type == "" {
		return nil, []error{errors.New(`"ipam.type": missing; use "host-local" or the name of an IPAM plugin`)}
	}
	if c.Type != "host-local" {
		return c, nil
	}
	var errs []error
	if !dirName(c.Network) {
		errs = append(errs, fmt.Errorf(`"name": %q cannot name a directory under dataDir`, c.Network))
	}

	c.DataDir = raw.IPAM.DataDir
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	} else if !filepath.IsAbs(c.DataDir) {
		errs = append(errs, fmt.Errorf(`"ipam.dataDir": must be an absolute path, got %q`, c.DataDir))
	}
	c.DataDir = filepath.Clean(c.DataDir)
	c.Routes = raw.IPAM.Routes
	errs = append(errs, checkRoutes(c.Routes)...)
	c.ResolvConf = raw.IPAM.ResolvConf

	// Range sets: runtimeConfig.ipRanges first, then the legacy single
	// range, then ranges — the reference's order.
	type named struct {
		key string
		set []rawRange
	}
	var sets []named
	for i, s := range raw.RuntimeConfig.IPRanges {
		sets = append(sets, named{fmt.Sprintf("runtimeConfig.ipRanges[%d]", i), s})
	}
	if raw.IPAM.Subnet != "" {
		sets = append(sets, named{"ipam", []rawRange{raw.IPAM.rawRange}})
	} else if raw.IPAM.RangeStart != "" || raw.IPAM.RangeEnd != "" || raw.IPAM.Gateway != "" {
		errs = append(errs, errors.New(`"ipam.subnet": missing, but rangeStart, rangeEnd or gateway is set`))
	}
	for i, s := range raw.IPAM.Ranges {
		sets = append(sets, named{fmt.Sprintf("ipam.ranges[%d]", i), s})
	}
	if len(sets) == 0 {
		errs = append(errs, errors.New(`"ipam.ranges": no address ranges; give at least one, e.g. [[{"subnet": "10.22.0.0/16"}]]`))
	}
	var keys []string
	for _, s := range sets {
		rs, serrs, notes := parseRangeSet(s.key, s.set)
		errs = append(errs, serrs...)
		c.Adjusted = append(c.Adjusted, notes...)
		c.RangeSets = append(c.RangeSets, rs)
		keys = append(keys, s.key)
	}
	if len(errs) == 0 {
		errs = append(errs, c.checkSetOverlaps(keys)...)
	}
	if len(errs) == 0 {
		errs = append(errs, c.checkFamilies()...)
	}

	requested, rerrs := parseRequested(cniArgs, raw)
	errs = append(errs, rerrs...)
	c.Requested = requested
	if len(errs) == 0 {
		errs = append(errs, c.checkRequested()...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// Subnets are the subnets of every range, in order, each once.
func (c *Config) Subnets() []netip.Prefix {
	var out []netip.Prefix
	for _, set := range c.RangeSets {
		for _, r := range set {
			if !slices.Contains(out, r.Subnet) {
				out = append(out, r.Subnet)
			}
		}
	}
	return out
}

// ParseStore reads only what locates a network's store: the IPAM type,
// the network name and dataDir. It is for DEL and GC, which must release
// what an earlier config reserved even when today's config no longer
// passes Parse (an operator edited it, an upgrade added a rule). The
// returned Config releases, looks up and collects; it cannot allocate.
func ParseStore(stdin []byte) (*Config, error) {
	var raw rawConfig
	if err := json.Unmarshal(stdin, &raw); err != nil && raw.IPAM == nil {
		return nil, fmt.Errorf("decode ipam config: %w", err)
	}
	var empty struct {
		IPAM map[string]json.RawMessage `json:"ipam"`
	}
	_ = json.Unmarshal(stdin, &empty)
	if raw.IPAM == nil || len(empty.IPAM) == 0 {
		return nil, ErrNoIPAM
	}
	c := &Config{Network: raw.Name, CNIVersion: raw.CNIVersion, Type: raw.IPAM.Type, LockTimeout: DefaultLockTimeout}
	if c.Type != "host-local" {
		return c, nil
	}
	if !dirName(c.Network) {
		return nil, fmt.Errorf(`"name": %q cannot name a directory under dataDir`, c.Network)
	}
	c.DataDir = raw.IPAM.DataDir
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	} else if !filepath.IsAbs(c.DataDir) {
		return nil, fmt.Errorf(`"ipam.dataDir": must be an absolute path, got %q`, c.DataDir)
	}
	c.DataDir = filepath.Clean(c.DataDir)
	return c, nil
}

// DefaultStore is the network's store where host-local keeps it unless
// told otherwise (DefaultDataDir), when it exists: for a DEL or GC whose
// config no longer locates a store (its ipam removed, emptied, or given a
// relative dataDir after the ADD), which releases what the attachment
// holds there. Nil when there is none.
func DefaultStore(stdin []byte) *Config {
	var raw struct {
		Name       string `json:"name"`
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(stdin, &raw)
	if !dirName(raw.Name) {
		return nil
	}
	if st, err := os.Stat(filepath.Join(defaultStores, raw.Name)); err != nil || !st.IsDir() {
		return nil
	}
	return &Config{Network: raw.Name, CNIVersion: raw.CNIVersion, Type: "host-local", DataDir: defaultStores, LockTimeout: DefaultLockTimeout}
}

// dirName reports whether a network name can name its store's directory
// under dataDir: one path element, not "." or "..".
func dirName(network string) bool {
	return network != "" && !strings.ContainsAny(network, "/\x00") && network != "." && network != ".."
}

// defaultStores is DefaultDataDir, which tests move.
var defaultStores = DefaultDataDir

func (c *Config) checkSetOverlaps(keys []string) []error {
	var errs []error
	for i := range c.RangeSets {
		for j := i + 1; j < len(c.RangeSets); j++ {
			if c.RangeSets[i].Overlaps(c.RangeSets[j]) {
				errs = append(errs, fmt.Errorf(`%q and %q overlap: %s and %s`, keys[i], keys[j], c.RangeSets[i], c.RangeSets[j]))
			}
		}
	}
	return errs
}

func (c *Config) checkFamilies() []error {
	if ok, _ := version.GreaterThanOrEqualTo(c.CNIVersion, "0.3.0"); ok {
		return nil
	}
	v4, v6 := 0, 0
	for _, s := range c.RangeSets {
		if s.Is4() {
			v4++
		} else {
			v6++
		}
	}
	if v4 > 1 || v6 > 1 {
		return []error{fmt.Errorf(`"ipam.ranges": cniVersion %s allows one address per family; use 0.3.0 or later for more`, c.CNIVersion)}
	}
	return nil
}

// ArgsError is a problem with CNI_ARGS: a value the runtime passed in the
// environment, not the network config (CNI code 4, not 7).
type ArgsError struct{ Msg string }

func (e ArgsError) Error() string { return e.Msg }

func parseRequested(cniArgs string, raw rawConfig) ([]netip.Addr, []error) {
	type src struct{ key, val string }
	var vals []src
	for _, kv := range strings.Split(cniArgs, ";") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == "IP" {
			for _, s := range strings.Split(v, ",") {
				vals = append(vals, src{"CNI_ARGS IP", s})
			}
		}
	}
	if raw.Args != nil && raw.Args.CNI != nil {
		for _, s := range raw.Args.CNI.IPs {
			vals = append(vals, src{`"args.cni.ips"`, s})
		}
	}
	for _, s := range raw.RuntimeConfig.IPs {
		vals = append(vals, src{`"runtimeConfig.ips"`, s})
	}
	var out []netip.Addr
	var errs []error
	for _, v := range vals {
		s := strings.TrimSpace(v.val)
		if p, err := netip.ParsePrefix(s); err == nil { // "10.1.0.5/24" is accepted too
			s = p.Addr().String()
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			msg := fmt.Sprintf("%s: %q is not an IP address", v.key, v.val)
			if v.key == "CNI_ARGS IP" {
				errs = append(errs, ArgsError{msg})
			} else {
				errs = append(errs, errors.New(msg))
			}
			continue
		}
		out = append(out, a.Unmap())
	}
	return out, errs
}

func (c *Config) checkRequested() []error {
	var errs []error
	used := make([]bool, len(c.RangeSets))
	for _, a := range c.Requested {
		i, r := c.setFor(a)
		switch {
		case i < 0:
			errs = append(errs, fmt.Errorf("requested address %s is outside every range (%s)", a, c.rangeList()))
		case a == r.Gateway:
			errs = append(errs, fmt.Errorf("requested address %s is the gateway of %s", a, r.Subnet))
		case used[i]:
			errs = append(errs, fmt.Errorf("requested address %s: range set %s already has a requested address", a, c.RangeSets[i]))
		default:
			used[i] = true
		}
	}
	return errs
}

func (c *Config) setFor(a netip.Addr) (int, *Range) {
	for i, s := range c.RangeSets {
		if r := s.RangeFor(a); r != nil {
			return i, r
		}
	}
	return -1, nil
}

func (c *Config) rangeList() string {
	var s []string
	for _, rs := range c.RangeSets {
		s = append(s, rs.String())
	}
	return strings.Join(s, "; ")
}

// Dir is the network's store directory.
func (c *Config) Dir() string { return filepath.Join(c.DataDir, c.Network) }

// KeySchemas are zero values of what host-local decodes the "ipam" object
// and each of its ranges into: their JSON tags are the keys it reads
// (pkg/plugin names the others as likely typos).
func KeySchemas() (ipamObject, rangeObject any) {
	return reflect.New(reflect.TypeOf(rawConfig{}.IPAM).Elem()).Interface(), rawRange{}
}

// MetaDir is the store's directory for netns-cni's own files (the owner
// index, the network's rule stamps): never a reservation, and the
// reference host-local leaves it alone.
func (c *Config) MetaDir() string { return filepath.Join(c.Dir(), metaName) }

// checkRoutes checks what the kernel would refuse, or take for another
// value, in each route's attributes (spec 1.1.0, section 5), naming the
// key.
func checkRoutes(routes []*types.Route) []error {
	var errs []error
	check := func(i int, key string, v, max int64) {
		if v < 0 || v > max {
			errs = append(errs, fmt.Errorf(`"ipam.routes[%d].%s": must be 0-%d, got %d`, i, key, max, v))
		}
	}
	for i, r := range routes {
		if r == nil {
			continue
		}
		check(i, "priority", int64(r.Priority), math.MaxUint32)
		check(i, "mtu", int64(r.MTU), math.MaxUint32)
		check(i, "advmss", int64(r.AdvMSS), math.MaxUint32)
		if r.Table != nil {
			check(i, "table", int64(*r.Table), math.MaxUint32)
		}
		if r.Scope != nil {
			check(i, "scope", int64(*r.Scope), 255)
		}
	}
	return errs
}
