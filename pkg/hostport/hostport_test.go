package hostport

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, x := range s {
		out = append(out, netip.MustParseAddr(x))
	}
	return out
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []Mapping
		want []string // substrings, one per error
	}{
		{"fine", []Mapping{{HostPort: 8080, ContainerPort: 80}, {HostPort: 53, ContainerPort: 53, Protocol: "UDP", HostIP: "::"}}, nil},
		{"ports", []Mapping{{HostPort: 0, ContainerPort: 70000}}, []string{
			`"runtimeConfig.portMappings[0].hostPort": must be 1-65535, got 0`,
			`"runtimeConfig.portMappings[0].containerPort": must be 1-65535, got 70000`}},
		{"protocol", []Mapping{{HostPort: 1, ContainerPort: 1, Protocol: "icmp"}}, []string{`"runtimeConfig.portMappings[0].protocol": must be "tcp", "udp" or "sctp", got "icmp"`}},
		{"hostIP", []Mapping{{HostPort: 1, ContainerPort: 1, HostIP: "localhost"}}, []string{`"runtimeConfig.portMappings[0].hostIP": "localhost" is not an IP address`}},
		{"hostIP with a zone", []Mapping{{HostPort: 1, ContainerPort: 1, HostIP: "fe80::1%eth0"}}, []string{`"runtimeConfig.portMappings[0].hostIP": "fe80::1%eth0" has a zone`}},
		{"same twice", []Mapping{{HostPort: 80, ContainerPort: 8080}, {HostPort: 80, ContainerPort: 8080, Protocol: "tcp"}}, nil},
		{"clash", []Mapping{{HostPort: 80, ContainerPort: 8080}, {HostPort: 80, ContainerPort: 9090, HostIP: "0.0.0.0"}}, []string{
			`"runtimeConfig.portMappings[1].hostPort": 80/tcp is forwarded by [0] to container port 8080 already`}},
		{"other protocol", []Mapping{{HostPort: 80, ContainerPort: 8080}, {HostPort: 80, ContainerPort: 9090, Protocol: "udp"}}, nil},
		{"other host address", []Mapping{{HostPort: 80, ContainerPort: 8080, HostIP: "192.0.2.1"}, {HostPort: 80, ContainerPort: 9090, HostIP: "192.0.2.2"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := Validate(tc.ms)
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("errors %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.Contains(got[i], tc.want[i]) {
					t.Errorf("error %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func TestPlan(t *testing.T) {
	ms := []Mapping{
		{HostPort: 8080, ContainerPort: 80},                                // both families
		{HostPort: 53, ContainerPort: 5353, Protocol: "UDP", HostIP: "::"}, // IPv6, any address
		{HostPort: 9090, ContainerPort: 90, HostIP: "192.0.2.1"},           // one IPv4 address
		{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"},               // a duplicate
	}
	got := Plan(ms, addrs("10.0.0.2", "fd00::2", "10.0.0.3"))
	want := []Entry{
		{Proto: 6, HostPort: 8080, Pod: netip.MustParseAddr("10.0.0.2"), ContainerPort: 80},
		{Proto: 6, HostPort: 8080, Pod: netip.MustParseAddr("fd00::2"), ContainerPort: 80},
		{Proto: 17, HostPort: 53, Pod: netip.MustParseAddr("fd00::2"), ContainerPort: 5353},
		{Proto: 6, HostIP: netip.MustParseAddr("192.0.2.1"), HostPort: 9090, Pod: netip.MustParseAddr("10.0.0.2"), ContainerPort: 90},
	}
	if d := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Fatalf("plan (-want +got):\n%s", d)
	}
	if got := Plan(ms, addrs("10.0.0.2")); len(got) != 2 {
		t.Errorf("IPv4 only: %v", got)
	}
	// Elements decode back into their entries.
	for _, e := range want {
		set, key, val := elem(e)
		back, ok := entryOf(set, key, val)
		if !ok || back != e {
			t.Errorf("%v: element of %s decodes to %v", e, set, back)
		}
	}
}

// lab is a fake host with one container wired to it (10.9.0.2, fd09::2,
// behind the host's hp0) and the outside world (192.0.2.2) on its uplink
// (192.0.2.1); the container answers on port 80 with the source address
// it sees.
type lab struct {
	sb   *nstest.Sandbox
	pod  *nsutil.NS
	out  *nsutil.NS
	kind string
	b    Backend
}

func newLab(t *testing.T, kind string) *lab {
	t.Helper()
	if kind == IPTables {
		nstest.NeedCommand(t, "iptables", "make deps")
	}
	sb := nstest.NewT(t)
	out, err := sb.NewOutside()
	if err != nil {
		t.Fatal(err)
	}
	pod := sb.PodT(t, "pod")
	if err := nstest.Wire(nstest.End{NS: sb.Host, Name: "hp0", Addrs: []string{"10.9.0.1/24", "fd09::1/64"}},
		nstest.End{NS: pod, Name: "eth0", Addrs: []string{"10.9.0.2/24", "fd09::2/64"}}); err != nil {
		t.Fatal(err)
	}
	h, err := pod.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, gw := range []string{"10.9.0.1", "fd09::1"} {
		if err := h.RouteAdd(&netlink.Route{Gw: netip.MustParseAddr(gw).AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	write := func(ns *nsutil.NS, path, val string) {
		if err := ns.Do(func() error { return os.WriteFile(path, []byte(val), 0o644) }); err != nil {
			t.Fatal(err)
		}
	}
	write(sb.Host, "/proc/sys/net/ipv4/ip_forward", "1")
	write(sb.Host, "/proc/sys/net/ipv6/conf/all/forwarding", "1")
	srv, err := nstest.ServeSource(pod, 80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	b, err := New(kind)
	if err != nil {
		t.Fatal(err)
	}
	return &lab{sb: sb, pod: pod, out: out, kind: kind, b: b}
}

func (l *lab) spec(owner string, ms ...Mapping) Spec {
	return Spec{Network: "net", Owner: owner, Entries: Plan(ms, addrs("10.9.0.2", "fd09::2")), HostIf: "hp0"}
}

// onHost runs fn in the fake host.
func (l *lab) onHost(t *testing.T, fn func() error) {
	t.Helper()
	if err := l.sb.Host.Do(fn); err != nil {
		t.Fatal(err)
	}
}

func expectAnswer(t *testing.T, from *nsutil.NS, proto, addr, want string) {
	t.Helper()
	var got string
	var err error
	if proto == "udp" {
		got, err = nstest.AskUDP(from, addr)
	} else {
		got, err = nstest.Fetch(from, addr)
	}
	if err != nil || got != want {
		t.Errorf("%s %s from %s: answer %q, %v; want %q", proto, addr, from.Path(), got, err, want)
	}
}

func expectNoAnswer(t *testing.T, from *nsutil.NS, addr, why string) {
	t.Helper()
	if got, err := nstest.Fetch(from, addr); err == nil {
		t.Errorf("tcp %s answered %q: %s", addr, got, why)
	}
}

func TestForwards(t *testing.T) {
	for _, kind := range []string{NFTables, IPTables} {
		t.Run(kind, func(t *testing.T) {
			l := newLab(t, kind)
			s := l.spec("c1/eth0", Mapping{HostPort: 8080, ContainerPort: 80}, Mapping{HostPort: 8080, ContainerPort: 80, Protocol: "udp"},
				Mapping{HostPort: 9090, ContainerPort: 80, HostIP: "192.0.2.1"})
			l.onHost(t, func() error { return l.b.Add(s) })

			// From outside, both families and protocols: the client's own address arrives.
			expectAnswer(t, l.out, "tcp", "192.0.2.1:8080", "192.0.2.2")
			expectAnswer(t, l.out, "tcp", "[2001:db8:ff::1]:8080", "2001:db8:ff::2")
			expectAnswer(t, l.out, "udp", "192.0.2.1:8080", "192.0.2.2")
			expectAnswer(t, l.out, "tcp", "192.0.2.1:9090", "192.0.2.2")
			// From the host itself, to its own address and to its loopback
			// (masqueraded: 127.0.0.1 cannot be answered from the container).
			expectAnswer(t, l.sb.Host, "tcp", "192.0.2.1:8080", "192.0.2.1")
			expectAnswer(t, l.sb.Host, "tcp", "127.0.0.1:8080", "10.9.0.1")
			// Hairpin: the container reaches its own mapped port.
			expectAnswer(t, l.pod, "tcp", "192.0.2.1:8080", "10.9.0.1")
			// A host address mapping holds for that address only.
			expectNoAnswer(t, l.pod, "10.9.0.1:9090", "9090 is mapped on 192.0.2.1 only")
			// Traffic the host only forwards is not intercepted: port 8080 of
			// the container itself has no listener (the reference's nftables
			// backend DNATed this before v1.9.0).
			oh, err := l.out.Handle()
			if err != nil {
				t.Fatal(err)
			}
			defer oh.Close()
			if err := oh.RouteAdd(&netlink.Route{Dst: netlinkPrefix("10.9.0.0/24"), Gw: netip.MustParseAddr("192.0.2.1").AsSlice()}); err != nil {
				t.Fatal(err)
			}
			expectAnswer(t, l.out, "tcp", "10.9.0.2:80", "192.0.2.2")
			expectNoAnswer(t, l.out, "10.9.0.2:8080", "forwarded traffic must not be DNATed")

			// Again: nothing changes, nothing is added twice.
			l.onHost(t, func() error { return l.b.Add(s) })
			var listed map[string][]Entry
			l.onHost(t, func() (err error) { listed, err = l.b.List("net"); return err })
			if len(listed) != 1 || len(listed["c1/eth0"]) != len(s.Entries) {
				t.Errorf("listed %v, want the %d forwards of c1/eth0", listed, len(s.Entries))
			}
			l.onHost(t, func() error { return l.b.Check(s) })

			// A firewall reload flushed what leads to the forwards (the host's
			// nat PREROUTING; with nftables, the table's prerouting chain):
			// Check says so — with the forwards themselves in place — and the
			// next Add puts it back.
			flush := map[string][]string{IPTables: {"iptables", "-t", "nat", "-F", "PREROUTING"}, NFTables: {"nft", "flush", "chain", "inet", tableOf("net").Name, chainPre}}[kind]
			l.onHost(t, func() error { return exec.Command(flush[0], flush[1:]...).Run() })
			expectNoAnswer(t, l.out, "192.0.2.1:8080", "nothing leads to the forward")
			l.onHost(t, func() error {
				if err := l.b.Check(s); err == nil {
					t.Errorf("Check passed after %v", flush)
				}
				return l.b.Add(s)
			})
			expectAnswer(t, l.out, "tcp", "192.0.2.1:8080", "192.0.2.2")
			l.onHost(t, func() error { return l.b.Check(s) })

			// Removed: the ports are closed again.
			var removed []Entry
			l.onHost(t, func() (err error) {
				removed, err = l.b.Remove(Spec{Network: "net", Owner: "c1/eth0", HostIf: "hp0"}, addrs("10.9.0.2", "fd09::2"))
				return err
			})
			if len(removed) != len(s.Entries) {
				t.Errorf("removed %v, want %d forwards", removed, len(s.Entries))
			}
			expectNoAnswer(t, l.out, "192.0.2.1:8080", "the mapping was removed")
			l.onHost(t, func() error {
				if err := l.b.Check(s); err == nil {
					t.Error("Check passed after Remove")
				}
				return l.b.Drop("net")
			})
		})
	}
}

func netlinkPrefix(s string) *net.IPNet { _, n, _ := net.ParseCIDR(s); return n }

func TestLoopbackGuard(t *testing.T) {
	for _, kind := range []string{NFTables, IPTables} {
		t.Run(kind, func(t *testing.T) {
			l := newLab(t, kind)
			l.onHost(t, func() error { return l.b.Add(l.spec("c1/eth0", Mapping{HostPort: 8080, ContainerPort: 80})) })
			if v := l.sysctl(t, "hp0"); v != "1" {
				t.Fatalf("route_localnet on hp0 = %q, want 1", v)
			}
			// A service bound to the host's loopback, and a container that
			// routes 127.0.0.53 to the host (it may: its namespace is its own).
			srv, err := nstest.Serve(l.sb.Host, "127.0.0.53:9999", "secret")
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = srv.Close() }()
			if err := l.pod.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv4/conf/eth0/route_localnet", []byte("1"), 0o644)
			}); err != nil {
				t.Fatal(err)
			}
			h, err := l.pod.Handle()
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			if err := h.RouteAdd(&netlink.Route{Dst: netlinkPrefix("127.0.0.53/32"), Gw: netip.MustParseAddr("10.9.0.1").AsSlice()}); err != nil {
				t.Fatal(err)
			}
			expectNoAnswer(t, l.pod, "127.0.0.53:9999", "the guard must keep containers off the host's loopback")
			// Proof that the guard is what stops it.
			l.removeGuard(t)
			expectAnswer(t, l.pod, "tcp", "127.0.0.53:9999", "secret")
			// Dropping the network's forwards turns route_localnet off again.
			l.onHost(t, func() error { return l.b.Drop("net") })
			if v := l.sysctl(t, "hp0"); v != "0" {
				t.Errorf("route_localnet on hp0 = %q after Drop, want 0", v)
			}
			expectNoAnswer(t, l.pod, "127.0.0.53:9999", "route_localnet is off")
		})
	}
}

func (l *lab) sysctl(t *testing.T, ifname string) string {
	t.Helper()
	var b []byte
	l.onHost(t, func() (err error) {
		b, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + ifname + "/route_localnet")
		return err
	})
	return strings.TrimSpace(string(b))
}

func (l *lab) removeGuard(t *testing.T) {
	t.Helper()
	cmd := []string{"nft", "flush", "chain", "inet", "netns-cni-net", chainGuard}
	if l.kind == IPTables {
		// The jump goes, the guard chain stays: its rules record the links
		// Drop turns route_localnet off on.
		cmd = []string{"iptables", "-D", "INPUT", "-m", "comment", "--comment", "netns-cni:net", "-j", chainName("HL", "net")}
	}
	l.onHost(t, func() error {
		if out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		return nil
	})
}

func TestOwnership(t *testing.T) {
	for _, kind := range []string{NFTables, IPTables} {
		t.Run(kind, func(t *testing.T) {
			l := newLab(t, kind)
			a := Spec{Network: "net", Owner: "a/eth0", HostIf: "hp0", Shared: true,
				Entries: Plan([]Mapping{{HostPort: 8080, ContainerPort: 80}}, addrs("10.9.0.2"))}
			b := Spec{Network: "net", Owner: "b/eth0", HostIf: "hp0", Shared: true,
				Entries: Plan([]Mapping{{HostPort: 8080, ContainerPort: 80}, {HostPort: 8081, ContainerPort: 80}}, addrs("10.9.0.3"))}
			live := map[string]bool{"a/eth0": true}
			alive := func(owner string, _ netip.Addr) bool { return live[owner] }
			a.Live, b.Live = alive, alive
			l.onHost(t, func() error { return l.b.Add(a) })
			// b wants a's port: refused while a lives, with nothing of b's left.
			l.onHost(t, func() error {
				err := l.b.Add(b)
				if !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), "a/eth0") {
					t.Errorf("Add of a taken port: %v, want ErrPortTaken naming a/eth0", err)
				}
				return nil
			})
			// a died without a DEL: its forward is stale and b takes it over.
			live["a/eth0"] = false
			l.onHost(t, func() error { return l.b.Add(b) })
			var listed map[string][]Entry
			l.onHost(t, func() (err error) { listed, err = l.b.List("net"); return err })
			if len(listed["a/eth0"]) != 0 || len(listed["b/eth0"]) != 2 {
				t.Errorf("listed %v, want b's two forwards only", listed)
			}
			// A DEL of a (late) removes nothing of b's.
			l.onHost(t, func() error {
				removed, err := l.b.Remove(Spec{Network: "net", Owner: "a/eth0", HostIf: "hp0", Shared: true}, addrs("10.9.0.2"))
				if len(removed) != 0 {
					t.Errorf("a's DEL removed %v", removed)
				}
				return err
			})
			// GC keeping nobody removes b's, leaving the shared link's mark.
			var collected []Entry
			l.onHost(t, func() (err error) {
				collected, err = l.b.Collect("net", func(string) bool { return false })
				return err
			})
			if len(collected) != 2 {
				t.Errorf("collected %v, want b's two forwards", collected)
			}
			l.onHost(t, func() (err error) { listed, err = l.b.List("net"); return err })
			if len(listed) != 0 {
				t.Errorf("left after GC: %v", listed)
			}
			l.onHost(t, func() error { return l.b.Drop("net") })
			if kind == NFTables {
				l.onHost(t, func() error {
					if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "netns-cni-net") {
						t.Errorf("table left after Drop: %s", out)
					}
					return nil
				})
			}
		})
	}
}

// TestConflict: a forward is refused when another network forwards its
// host port in either backend — on the same address, or where either is
// on every address — and not for the attachment's own forwards left in
// the other backend by an ipMasqBackend switch, nor for stale ones.
func TestConflict(t *testing.T) {
	for _, held := range []string{NFTables, IPTables} {
		t.Run(held, func(t *testing.T) {
			l := newLab(t, held)
			// Network "net" forwards 8080 on every address, 9090 on 192.0.2.1.
			l.onHost(t, func() error {
				return l.b.Add(l.spec("a/eth0", Mapping{HostPort: 8080, ContainerPort: 80}, Mapping{HostPort: 9090, ContainerPort: 80, HostIP: "192.0.2.1"}))
			})
			other := func(kind string, ms ...Mapping) error {
				s := Spec{Network: "other", Owner: "b/eth0", Entries: Plan(ms, addrs("10.8.0.2"))}
				var err error
				l.onHost(t, func() error { _, err = Conflict(s, kind); return nil })
				return err
			}
			for _, kind := range []string{NFTables, IPTables} {
				for _, tc := range []struct {
					m     Mapping
					clash bool
				}{
					{Mapping{HostPort: 8080, ContainerPort: 80}, true},
					{Mapping{HostPort: 8080, ContainerPort: 80, HostIP: "192.0.2.7"}, true}, // inside net's every-address forward
					{Mapping{HostPort: 9090, ContainerPort: 80}, true},                      // over net's one-address forward
					{Mapping{HostPort: 9090, ContainerPort: 80, HostIP: "192.0.2.1"}, true},
					{Mapping{HostPort: 9090, ContainerPort: 80, HostIP: "192.0.2.2"}, false},
					{Mapping{HostPort: 8080, ContainerPort: 80, Protocol: "udp"}, false},
					{Mapping{HostPort: 8081, ContainerPort: 80}, false},
				} {
					err := other(kind, tc.m)
					if tc.clash != errors.Is(err, ErrPortTaken) || tc.clash && !strings.Contains(err.Error(), "a/eth0") {
						t.Errorf("network other (%s) asks for %+v with net's forwards in %s: %v, want a clash: %v", kind, tc.m, held, err, tc.clash)
					}
				}
			}
			// The network's own forwards in the other backend: those of the
			// attachment itself, and stale ones, are no clash but leftovers
			// to remove (left, they would take the traffic); a live
			// attachment's is a clash.
			otherKind := map[string]string{NFTables: IPTables, IPTables: NFTables}[held]
			own := func(owner string, live bool) ([]Leftover, error) {
				s := l.spec(owner, Mapping{HostPort: 8080, ContainerPort: 80})
				s.Live = func(string, netip.Addr) bool { return live }
				var left []Leftover
				var err error
				l.onHost(t, func() error { left, err = Conflict(s, otherKind); return nil })
				return left, err
			}
			for _, tc := range []struct {
				owner string
				live  bool
			}{{"a/eth0", true}, {"c/eth0", false}} {
				left, err := own(tc.owner, tc.live)
				if err != nil || len(left) != 2 || left[0].Kind != held || left[0].Owner != "a/eth0" || left[0].Entry.HostPort != 8080 {
					t.Errorf("%s (live %v) asking for 8080 held by a/eth0 in %s: %+v, %v; want a/eth0's two forwards (IPv4, IPv6) as leftovers", tc.owner, tc.live, held, left, err)
				}
			}
			if _, err := own("c/eth0", true); !errors.Is(err, ErrPortTaken) {
				t.Errorf("a live attachment's forward in %s: %v, want ErrPortTaken", held, err)
			}
			// Its forwards in the backend it adds to are Add's to judge.
			l.onHost(t, func() error {
				_, err := Conflict(l.spec("c/eth0", Mapping{HostPort: 8080, ContainerPort: 80}), held)
				return err
			})
			l.onHost(t, func() error { return l.b.Drop("net") })
		})
	}
}
