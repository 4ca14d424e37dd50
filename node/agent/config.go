package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/netns-cni/netns-cni/pkg/netconf"
)

// plugin is the plugin the config asks for, its default filled in.
func (c Config) plugin() string { return cmp.Or(c.Plugin, "bridge-nat") }

// bridge is bridge-nat's bridge, its default filled in.
func (c Config) bridge() string { return cmp.Or(c.Bridge, "cni0") }

// Config is the agent's configuration (the DaemonSet's ConfigMap).
type Config struct {
	// Plugin is "bridge-nat" (default) or "veth-ptp".
	Plugin string `json:"plugin"`
	// ClusterCIDRs are the whole cluster's pod CIDRs: traffic to them keeps
	// its pod source address (no masquerade).
	ClusterCIDRs []string `json:"clusterCIDRs"`
	// Bridge is bridge-nat's bridge; default "cni0".
	Bridge string `json:"bridge,omitempty"`
	// MTU of the pods' interfaces; 0 keeps the kernel's default.
	MTU int `json:"mtu,omitempty"`
	// Portmap chains the reference portmap plugin for hostPort instead of
	// the plugins' built-in port mappings (which take the portMappings
	// capability otherwise).
	Portmap bool `json:"portmap"`
	// HostGW routes other nodes' pod CIDRs via their InternalIP.
	HostGW bool `json:"hostGW"`
	// DataDir is the IPAM store directory on the node.
	DataDir string `json:"dataDir,omitempty"`
	// CNIVersion is the conflist's cniVersion: "1.0.0" (default), which
	// containerd 1.6 and 1.7 read results of, or "1.1.0" for runtimes
	// that know it (containerd 2.x), which then send STATUS and GC.
	CNIVersion string `json:"cniVersion,omitempty"`
}

// cniVersion is the conflist's cniVersion, its default filled in.
func (c Config) cniVersion() string { return cmp.Or(c.CNIVersion, "1.0.0") }

// configKeys are Config's JSON keys, spelled exactly.
var configKeys = []string{"plugin", "clusterCIDRs", "bridge", "mtu", "portmap", "hostGW", "dataDir", "cniVersion"}

// LoadConfig decodes the agent's configuration strictly and validates it.
// A key Config does not have is an error, not a silent no-op: a typo in a
// ConfigMap would otherwise change nothing and say nothing. So is a key
// spelled in another case ("hostgw"), which encoding/json would accept.
func LoadConfig(r io.Reader) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, err
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return Config{}, errors.New("empty; expected a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, fmt.Errorf("not a JSON object: %w", err)
	}
	var errs []error
	for k := range raw {
		if slices.Contains(configKeys, k) {
			continue
		}
		msg := fmt.Sprintf("%q: unknown key", k)
		for _, known := range configKeys {
			if strings.EqualFold(k, known) {
				msg += fmt.Sprintf("; did you mean %q?", known)
			}
		}
		errs = append(errs, errors.New(msg))
	}
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return Config{}, fmt.Errorf("%w (known keys: %s)", errors.Join(errs...), strings.Join(configKeys, ", "))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Config{}, fmt.Errorf("%q: a JSON %s where %s belongs", te.Field, te.Value, jsonKind(te.Type.Kind().String()))
		}
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// jsonKind names, with its article, the JSON type that decodes into a Go
// value of kind.
func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"), strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "slice":
		return "an array"
	case kind == "bool":
		return "true or false"
	}
	return "a " + kind
}

// Validate reports every problem, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	switch c.Plugin {
	case "", "bridge-nat", "veth-ptp":
	default:
		errs = append(errs, fmt.Errorf(`"plugin": must be "bridge-nat" or "veth-ptp", got %q`, c.Plugin))
	}
	switch c.CNIVersion {
	case "", "1.0.0":
	case "1.1.0":
		if c.Portmap {
			// Every pod's ADD would fail in the portmap exec.
			errs = append(errs, errors.New(`"cniVersion": "1.1.0" with "portmap": true: Debian's portmap speaks 1.0.0 at most; `+
				`use the built-in port mappings ("portmap": false) or "cniVersion": "1.0.0"`))
		}
	default:
		errs = append(errs, fmt.Errorf(`"cniVersion": must be "1.0.0" or "1.1.0", got %q`, c.CNIVersion))
	}
	if len(c.ClusterCIDRs) == 0 {
		errs = append(errs, errors.New(`"clusterCIDRs": missing; list the cluster's pod CIDRs`))
	}
	ipv6 := false
	for i, s := range c.ClusterCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf(`"clusterCIDRs[%d]": %q is not a CIDR`, i, s))
		}
		ipv6 = ipv6 || p.Addr().Is6()
	}
	// 576 is the least every IPv4 host must accept; 0 leaves the MTU to
	// the kernel (the node's link's). IPv6 needs 1280 (RFC 8200 section
	// 5): below it the kernel takes IPv6 off the pods' interfaces.
	switch {
	case c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535):
		errs = append(errs, fmt.Errorf(`"mtu": must be 576-65535 (or 0 for the default), got %d`, c.MTU))
	case c.MTU != 0 && c.MTU < 1280 && ipv6:
		errs = append(errs, fmt.Errorf(`"mtu": must be at least 1280 with an IPv6 entry in "clusterCIDRs" (IPv6's minimum link MTU, RFC 8200), got %d`, c.MTU))
	}
	if c.Bridge != "" {
		if err := netconf.ValidLinkName(c.Bridge); err != nil {
			errs = append(errs, fmt.Errorf(`"bridge": %w`, err))
		}
	}
	return errors.Join(errs...)
}

// Reload decides what a new read of the config file means for an agent
// running with current: seen is the content read last time, now the
// content read now. It applies (the new Config, true) only content that
// changed, validates and says something current does not. Content that
// changed and does not validate is the error, and current stays; the
// same content read again is not reported again, being unchanged.
func Reload(current Config, seen, now []byte) (Config, bool, error) {
	if bytes.Equal(seen, now) {
		return Config{}, false, nil
	}
	cfg, err := LoadConfig(bytes.NewReader(now))
	if err != nil {
		return Config{}, false, err
	}
	if reflect.DeepEqual(cfg, current) {
		return Config{}, false, nil // reformatted, or back to what runs
	}
	return cfg, true, nil
}

// ConfigFile is the agent's config file (the ConfigMap's config.json, as
// mounted in the pod), read at start and polled for changes by Run. The
// kubelet updates a ConfigMap volume by swapping a symlink to a new
// directory, never by writing the file, so the content is read again and
// compared: a watch on the file would keep seeing the old one.
type ConfigFile struct {
	Path string

	seen   []byte // the content read last, valid or not
	failed string // the read error last reported, so it is said once
}

// Load reads the file and decodes it strictly (LoadConfig).
func (f *ConfigFile) Load() (Config, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return Config{}, err
	}
	cfg, err := LoadConfig(bytes.NewReader(data))
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", f.Path, err)
	}
	f.seen = data
	return cfg, nil
}

// Poll reads the file again and tells whether a new config is to be
// applied (Reload); an error (a bad edit, an unreadable file) is reported
// once, not at every poll, and means current stays.
func (f *ConfigFile) Poll(current Config) (Config, bool, error) {
	data, err := os.ReadFile(f.Path)
	if err != nil {
		if err.Error() == f.failed {
			return Config{}, false, nil
		}
		f.failed = err.Error()
		return Config{}, false, err
	}
	f.failed = ""
	cfg, apply, err := Reload(current, f.seen, data)
	f.seen = data
	if err != nil {
		return Config{}, false, fmt.Errorf("%s: %w", f.Path, err)
	}
	return cfg, apply, nil
}
