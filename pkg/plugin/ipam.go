package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netns-cni/netns-cni/pkg/ipam"
)

// IPAM is the address management a network config asks for: host-local
// runs in-process on pkg/ipam; any other ipam.type is delegated to that
// plugin binary (found in CNI_PATH) exactly as the spec describes.
type IPAM struct {
	// Local is the in-process host-local config; nil when delegated.
	Local *ipam.Config
	// Type is ipam.type.
	Type  string
	stdin []byte
	owner ipam.Owner
}

// LoadIPAM reads the "ipam" part of the config on stdin. A config without
// "ipam" returns (nil, nil): the caller decides whether that is allowed (a
// bridge in L2 mode). Problems are code-7 errors naming their keys.
func LoadIPAM(args *skel.CmdArgs) (*IPAM, error) {
	conf, errs := ipam.Parse(args.StdinData, args.Args)
	if len(errs) == 1 && errors.Is(errs[0], ipam.ErrNoIPAM) {
		return nil, nil
	}
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = describeJSONError(e)
		}
		return nil, invalid(errs, "invalid ipam config: %s", strings.Join(msgs, "; "))
	}
	return newIPAM(conf, args), nil
}

func newIPAM(conf *ipam.Config, args *skel.CmdArgs) *IPAM {
	m := &IPAM{Type: conf.Type, stdin: args.StdinData, owner: ipam.Owner{ID: args.ContainerID, IfName: args.IfName}}
	if conf.Type == "host-local" {
		m.Local = conf
		for _, note := range conf.Adjusted {
			noteConfig("ipam config adjusted", "note", note)
		}
		ipam.SetLogger(func(format string, a ...any) { slog.Info(fmt.Sprintf(format, a...)) })
	}
	return m
}

// loadIPAMLenient is LoadIPAM for DEL and GC: when the ipam config no
// longer passes, the store it names is still found (ipam.ParseStore) so
// its reservations can be released; the problems are logged. When the
// config names no store at all (its ipam removed or emptied, a relative
// dataDir), the network's store in host-local's default place, if there
// is one, is released from. nil when there is no store to find.
func loadIPAMLenient(args *skel.CmdArgs) *IPAM {
	m, err := LoadIPAM(args)
	if m != nil {
		return m
	}
	if err != nil {
		slog.Warn("invalid ipam config ignored: releasing by owner", "problem", err.Error())
		conf, err := ipam.ParseStore(args.StdinData)
		if err == nil {
			return newIPAM(conf, args)
		}
		if !errors.Is(err, ipam.ErrNoIPAM) {
			slog.Warn("no address store named", "problem", err.Error())
		}
	}
	if conf := ipam.DefaultStore(args.StdinData); conf != nil {
		slog.Warn("releasing from the network's store in host-local's default place", "store", filepath.Join(conf.DataDir, conf.Network))
		return newIPAM(conf, args)
	}
	return nil
}

// findDelegate says, naming the key, when the IPAM plugin ipam.type names
// is not in CNI_PATH (code 7: a config mistake, or a missing install, an
// operator can act on, where the exec's own error would reach the runtime
// as code 999), or when CNI_PATH is not set (code 4: optional for ADD,
// CHECK and DEL, but a delegated IPAM plugin is found through it).
func (m *IPAM) findDelegate() error {
	if err := m.pathMissing(); err != nil {
		return err
	}
	path := os.Getenv("CNI_PATH")
	if _, err := invoke.FindInPath(m.Type, filepath.SplitList(path)); err != nil {
		return ConfigError(`"ipam.type": no IPAM plugin %q in CNI_PATH (%s); install it there or name another`, m.Type, path)
	}
	return nil
}

// pathMissing is code 4 when the IPAM plugin is delegated and CNI_PATH,
// through which it is found, is not set; nil otherwise.
func (m *IPAM) pathMissing() error {
	if m.Local != nil || os.Getenv("CNI_PATH") != "" {
		return nil
	}
	return EnvError(`CNI_PATH: not set, but "ipam.type" %q is an IPAM plugin, found through it`, m.Type)
}

// Add reserves the attachment's addresses and returns them as a result
// (IPs with gateways, routes, DNS; no interfaces yet) plus a release func
// that undoes exactly what this call acquired: addresses an earlier ADD of
// the same attachment reserved are never released by it.
func (m *IPAM) Add(ctx context.Context) (*current.Result, func() error, error) {
	if m.Local == nil {
		if err := m.findDelegate(); err != nil {
			return nil, nil, err
		}
		r, err := invoke.DelegateAdd(ctx, m.Type, m.stdin, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("ipam %s: %w", m.Type, err)
		}
		res, err := current.NewResultFromResult(r)
		if err != nil {
			return nil, nil, DecodeError("ipam %s result: %v", m.Type, err)
		}
		release := func() error { return m.delegateDel(context.Background()) }
		return res, release, nil
	}
	leases, err := m.Local.Allocate(m.owner)
	if err != nil {
		return nil, nil, ipamError(err)
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion, Routes: m.Local.Routes}
	var fresh []netip.Addr
	for _, l := range leases {
		ipc := &current.IPConfig{Address: prefixToIPNet(l.Address)}
		if l.Gateway.IsValid() && l.Gateway != l.Address.Addr() {
			ipc.Gateway = net.IP(l.Gateway.AsSlice())
		}
		res.IPs = append(res.IPs, ipc)
		if l.New {
			fresh = append(fresh, l.Address.Addr())
		}
	}
	if m.Local.ResolvConf != "" {
		dns, err := parseResolvConf(m.Local.ResolvConf)
		if err != nil {
			_ = m.Local.ReleaseAddrs(m.owner, fresh)
			return nil, nil, ConfigError(`"ipam.resolvConf": %v`, err)
		}
		res.DNS = dns
	}
	release := func() error { return m.Local.ReleaseAddrs(m.owner, fresh) }
	return res, release, nil
}

// Held returns the addresses the store holds for the attachment; ok is
// false when it cannot tell (a delegated IPAM, an unreadable store).
func (m *IPAM) Held() (addrs []netip.Addr, ok bool) {
	if m.Local == nil {
		return nil, false
	}
	addrs, err := m.Local.Held(m.owner)
	return addrs, err == nil
}

// Del releases the attachment's addresses; nothing held is success.
func (m *IPAM) Del(ctx context.Context) error {
	if m.Local == nil {
		if err := m.findDelegate(); err != nil {
			return err
		}
		return m.delegateDel(ctx)
	}
	return ipamError(m.Local.Release(m.owner))
}

// delegateDel is the delegated IPAM plugin's DEL. When the plugin refuses
// the config's cniVersion (code 1) — a config edited to a newer version
// under live pods, or an ADD that failed for that very reason — the DEL is
// sent again at the highest version the plugin supports (its VERSION
// answer), prevResult converted to it: DEL means the same at every
// version, and a refusal repeated on every retry would keep the pod from
// ever being removed while its addresses stayed held.
func (m *IPAM) delegateDel(ctx context.Context) error {
	err := invoke.DelegateDel(ctx, m.Type, m.stdin, nil)
	var e *types.Error
	if !errors.As(err, &e) || e.Code != types.ErrIncompatibleCNIVersion {
		return err
	}
	_, versions := m.delegateSupports(ctx, "")
	v := highest(versions)
	if v == "" || v == m.version() {
		return err
	}
	stdin, cerr := withCNIVersion(m.stdin, v)
	if cerr != nil {
		return errors.Join(err, cerr)
	}
	slog.Info("the IPAM plugin refused the config's cniVersion: its DEL sent again at the highest it supports",
		"ipam", m.Type, "cniVersion", m.version(), "sentAt", v)
	return invoke.DelegateDel(ctx, m.Type, stdin, nil)
}

// version is the config's cniVersion.
func (m *IPAM) version() string {
	var c struct {
		CNIVersion string `json:"cniVersion"`
	}
	_ = json.Unmarshal(m.stdin, &c)
	return c.CNIVersion
}

// delegateSupports reports whether the delegated IPAM plugin supports spec
// version v (its VERSION answer, one exec), and the versions it supports;
// true when it cannot tell.
func (m *IPAM) delegateSupports(ctx context.Context, v string) (bool, []string) {
	path, err := invoke.FindInPath(m.Type, filepath.SplitList(os.Getenv("CNI_PATH")))
	if err != nil {
		return true, nil
	}
	info, err := invoke.GetVersionInfo(ctx, path, nil)
	if err != nil {
		return true, nil
	}
	versions := info.SupportedVersions()
	return slices.Contains(versions, v), versions
}

// highest is the highest of spec versions ("" for none).
func highest(versions []string) string {
	top := ""
	for _, v := range versions {
		if ge, err := version.GreaterThanOrEqualTo(v, top); top == "" || err == nil && ge {
			top = v
		}
	}
	return top
}

// withCNIVersion is the config stdin at cniVersion v, its prevResult (if
// any) converted to v; every other key as it was.
func withCNIVersion(stdin []byte, v string) ([]byte, error) {
	var conf map[string]json.RawMessage
	if err := json.Unmarshal(stdin, &conf); err != nil {
		return nil, err
	}
	var from string
	_ = json.Unmarshal(conf["cniVersion"], &from)
	conf["cniVersion"], _ = json.Marshal(v)
	if raw, ok := conf["prevResult"]; ok {
		r, err := version.NewResult(from, raw)
		if err == nil {
			r, err = r.GetAsVersion(v)
		}
		if err != nil {
			return nil, fmt.Errorf("prevResult at cniVersion %s: %w", v, err)
		}
		if conf["prevResult"], err = json.Marshal(r); err != nil {
			return nil, err
		}
	}
	return json.Marshal(conf)
}

// Check verifies the reservation matches the addresses of prev.
func (m *IPAM) Check(ctx context.Context, prev *current.Result) error {
	if m.Local == nil {
		if err := m.findDelegate(); err != nil {
			return err
		}
		return invoke.DelegateCheck(ctx, m.Type, m.stdin, nil)
	}
	var want []netip.Addr
	for _, ip := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ip.Address.IP); ok {
			want = append(want, a.Unmap())
		}
	}
	return ipamError(m.Local.Check(m.owner, want))
}

// GC releases every reservation of the network not held by an attachment
// in valid or one keep reports true for (nil: none), and returns the
// owners it released (none known when the IPAM plugin is delegated).
func (m *IPAM) GC(ctx context.Context, valid []types.GCAttachment, keep func(id, ifname string) bool) (map[ipam.Owner][]netip.Addr, error) {
	if m.Local == nil {
		if ok, versions := m.delegateSupports(ctx, "1.1.0"); !ok {
			slog.Warn("the IPAM plugin has no GC (spec 1.1.0): its reservations of attachments gone are not collected",
				"ipam", m.Type, "supports", versions)
			return nil, nil
		}
		return nil, invoke.DelegateGC(ctx, m.Type, m.stdin, nil)
	}
	listed := map[ipam.Owner]bool{}
	for _, v := range valid {
		listed[ipam.Owner{ID: v.ContainerID, IfName: v.IfName}] = true
	}
	released, err := m.Local.GCFunc(func(o ipam.Owner) bool {
		if o.IfName == "" { // a legacy reservation: the container ID alone
			for v := range listed {
				if v.ID == o.ID {
					return true
				}
			}
		}
		return listed[o] || (keep != nil && keep(o.ID, o.IfName))
	})
	return released, ipamError(err)
}

// Status answers code 50 when an ADD could not get addresses now.
func (m *IPAM) Status(ctx context.Context) error {
	if m.Local == nil {
		if err := m.findDelegate(); err != nil {
			return UnavailableError("%s", CNIError(err).Msg)
		}
		err := invoke.DelegateStatus(ctx, m.Type, m.stdin, nil)
		if err == nil {
			return nil
		}
		// Asked only on failure: STATUS runs every few seconds.
		if ok, versions := m.delegateSupports(ctx, m.version()); !ok {
			return UnavailableError("ipam plugin %q supports spec versions %v, not the config's cniVersion %s: no ADD can get addresses; "+
				"lower cniVersion or install a newer %s", m.Type, versions, m.version(), m.Type)
		}
		return err
	}
	if err := m.Local.Status(); err != nil {
		return UnavailableError("ipam: %v", err)
	}
	return nil
}

// ipamError wraps a store error with its context; CNIError gives the
// store's sentinels their codes.
func ipamError(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("ipam: %w", err)
}

func prefixToIPNet(p netip.Prefix) net.IPNet {
	bits := p.Addr().BitLen()
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// parseResolvConf reads nameserver, domain, search and options lines.
func parseResolvConf(path string) (types.DNS, error) {
	var dns types.DNS
	f, err := os.Open(path)
	if err != nil {
		return dns, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") || strings.HasPrefix(fields[0], ";") {
			continue
		}
		switch fields[0] {
		case "nameserver":
			dns.Nameservers = append(dns.Nameservers, fields[1])
		case "domain":
			dns.Domain = fields[1]
		case "search":
			dns.Search = append(dns.Search, fields[1:]...)
		case "options":
			dns.Options = append(dns.Options, fields[1:]...)
		}
	}
	return dns, sc.Err()
}
