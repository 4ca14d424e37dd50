// Package nstest builds network sandboxes for tests and the demo: a fake
// "host" namespace standing in for the node, and container namespaces beside
// it, all bind-mounted under a temporary directory and removed afterwards. The
// machine's own network namespace is never touched. Plugin binaries never
// link this package.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"

	"github.com/netns-cni/netns-cni/pkg/lock"
)

// Sandbox is a set of network namespaces under one directory: Host, the fake
// node, plus any number of pod namespaces.
type Sandbox struct {
	// Dir holds the namespace files; callers may keep other state there too.
	Dir string
	// Host is the namespace that plays the node: run plugins inside it.
	Host *nsutil.NS
	// ID is a short random tag, unique per sandbox, for naming links and
	// networks so that sandboxes can run in parallel.
	ID string

	mu   sync.Mutex
	pods []*nsutil.NS
}

// New makes a sandbox under dir, which must exist. Call Close to remove it.
func New(dir string) (*Sandbox, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	id := RandomID()
	host, err := nsutil.Create(filepath.Join(dir, "host-"+id))
	if err != nil {
		return nil, fmt.Errorf("create host namespace: %w", err)
	}
	s := &Sandbox{Dir: dir, Host: host, ID: id}
	// A node's loopback is up: the host's own 127.0.0.1 is reachable.
	if err := loopbackUp(host); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func loopbackUp(n *nsutil.NS) error {
	h, err := n.Handle()
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return fmt.Errorf("host loopback up: %w", err)
	}
	return nil
}

// ErrNotRoot is returned by New when the caller cannot create namespaces.
var ErrNotRoot = errors.New("creating network namespaces needs root")

// RandomID returns 8 random hex digits.
func RandomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewPod makes a container namespace named name inside the sandbox.
func (s *Sandbox) NewPod(name string) (*nsutil.NS, error) {
	n, err := nsutil.Create(filepath.Join(s.Dir, name+"-"+s.ID))
	if err != nil {
		return nil, fmt.Errorf("create pod namespace %s: %w", name, err)
	}
	s.mu.Lock()
	s.pods = append(s.pods, n)
	s.mu.Unlock()
	return n, nil
}

// RemovePod deletes a pod namespace early, as a runtime does before a late
// DEL. Removing it twice is fine.
func (s *Sandbox) RemovePod(n *nsutil.NS) error {
	_ = n.Close()
	return nsutil.Remove(n.Path())
}

// Close removes every namespace of the sandbox. Links inside them go with
// them; the kernel moves nothing back into the machine's namespace.
func (s *Sandbox) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, p := range s.pods {
		errs = append(errs, s.RemovePod(p))
	}
	s.pods = nil
	if s.Host != nil {
		_ = s.Host.Close()
		errs = append(errs, nsutil.Remove(s.Host.Path()))
		s.Host = nil
	}
	return errors.Join(errs...)
}

// NewT makes a sandbox for a test in t.TempDir(), removed when the test
// ends, pass or fail. It skips the test when not run as root.
func NewT(t testing.TB) *Sandbox {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatalf("sandbox: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sandbox cleanup: %v", err)
		}
	})
	return s
}

// NeedCommand skips the test when the command is not installed, naming
// the make target that installs it; under CI (CI=true), where `make test`
// installed it, the test fails instead, so a missing install step cannot
// pass as a skip.
func NeedCommand(t testing.TB, name, installer string) {
	t.Helper()
	_, err := exec.LookPath(name)
	need(t, err, name, installer)
}

// NeedFile is NeedCommand for a file by its path, such as a reference
// plugin in /usr/lib/cni.
func NeedFile(t testing.TB, path, installer string) {
	t.Helper()
	_, err := os.Stat(path)
	need(t, err, path, installer)
}

func need(t testing.TB, err error, what, installer string) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s missing under CI: `%s` should have installed it", what, installer)
	}
	t.Skipf("skipped: %s missing; `%s` installs it", what, installer)
}

// PodT makes a pod namespace in a test sandbox or fails the test.
func (s *Sandbox) PodT(t testing.TB, name string) *nsutil.NS {
	t.Helper()
	n, err := s.NewPod(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Outside addresses: the "outside" namespace stands in for the world beyond
// the node, on TEST-NET addresses, with the fake host in front of it.
const (
	HostUplink4, Outside4 = "192.0.2.1", "192.0.2.2"
	HostUplink6, Outside6 = "2001:db8:ff::1", "2001:db8:ff::2"
)

// NewOutside makes a namespace routed behind the fake host over a veth
// named "uplink": 192.0.2.2 and 2001:db8:ff::2, with no route back to any
// container network, so only masqueraded traffic from containers gets a
// reply.
func (s *Sandbox) NewOutside() (*nsutil.NS, error) {
	out, err := s.NewPod("outside")
	if err != nil {
		return nil, err
	}
	if err := Wire(End{NS: s.Host, Name: "uplink", Addrs: []string{HostUplink4 + "/24", HostUplink6 + "/64"}},
		End{NS: out, Name: "eth0", Addrs: []string{Outside4 + "/24", Outside6 + "/64"}}); err != nil {
		return nil, err
	}
	// Ready when the host reaches both outside addresses.
	for _, a := range []string{Outside4, Outside6} {
		deadline := time.Now().Add(5 * time.Second)
		for {
			var err error
			_ = s.Host.Do(func() error {
				err = exec.Command("ping", "-c", "1", "-W", "1", a).Run()
				return nil
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("outside %s unreachable from the host: %w", a, err)
			}
		}
	}
	return out, nil
}

// Serve answers every TCP connection on addr inside ns with greeting, until
// the listener is closed. The socket lives in ns; accepting needs no switch.
func Serve(ns *nsutil.NS, addr, greeting string) (net.Listener, error) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, greeting)
			_ = c.Close()
		}
	}()
	return ln, nil
}

// ServeSource answers on port inside ns, over TCP and UDP, IPv4 and IPv6,
// with the address each client's traffic arrives from — what a port
// mapping or a masquerade did to it — until the returned closer runs.
// (Each family is listened on by itself: a dual-stack listener depends on
// a probe Go makes once per process, in whichever namespace it is in.)
func ServeSource(ns *nsutil.NS, port int) (io.Closer, error) {
	var cs closers
	var lns []net.Listener
	var pcs []net.PacketConn
	err := ns.Do(func() error {
		for _, fam := range []string{"4", "6"} {
			ln, err := net.Listen("tcp"+fam, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			lns, cs = append(lns, ln), append(cs, ln)
			pc, err := net.ListenPacket("udp"+fam, fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			pcs, cs = append(pcs, pc), append(cs, pc)
		}
		return nil
	})
	if err != nil {
		_ = cs.Close()
		return nil, err
	}
	host := func(a net.Addr) string { h, _, _ := net.SplitHostPort(a.String()); return h }
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, host(c.RemoteAddr()))
				_ = c.Close()
			}
		}()
	}
	for _, pc := range pcs {
		go func() {
			buf := make([]byte, 64)
			for {
				_, src, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo([]byte(host(src)), src)
			}
		}()
	}
	return cs, nil
}

type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// AskUDP sends a datagram from inside ns to addr and returns the first
// answer, waiting at most two seconds.
func AskUDP(ns *nsutil.NS, addr string) (string, error) {
	var got string
	err := ns.Do(func() error {
		c, err := net.Dial("udp", addr)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("?")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		got = string(buf[:n])
		return err
	})
	return got, err
}

// Fetch connects from inside ns to addr and returns what it answers.
func Fetch(ns *nsutil.NS, addr string) (string, error) {
	var got string
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		b, err := io.ReadAll(c)
		got = string(b)
		return err
	})
	return got, err
}

// End is one end of a wire between two namespaces: the link's name there,
// its addresses (CIDR strings, address and prefix) and, optionally, the
// bridge in that namespace it becomes a port of.
type End struct {
	NS     *nsutil.NS
	Name   string
	Addrs  []string
	Master string
}

// Wire connects two namespaces with a veth pair, addresses both ends and
// sets them up. IPv6 duplicate address detection is off on both ends, so
// the first IPv6 packet through gets an answer.
func Wire(a, b End) error {
	ha, err := a.NS.Handle()
	if err != nil {
		return err
	}
	defer ha.Close()
	hb, err := b.NS.Handle()
	if err != nil {
		return err
	}
	defer hb.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a.Name}, PeerName: b.Name, PeerNamespace: netlink.NsFd(b.NS.Fd())}
	if err := ha.LinkAdd(veth); err != nil {
		return fmt.Errorf("wire %s-%s: %w", a.Name, b.Name, err)
	}
	for _, e := range []struct {
		End
		h nsutil.Handle
	}{{a, ha}, {b, hb}} {
		if err := e.setUp(e.h); err != nil {
			return err
		}
	}
	return nil
}

func (e End) setUp(h nsutil.Handle) error {
	l, err := h.LinkByName(e.Name)
	if err != nil {
		return err
	}
	if e.Master != "" {
		m, err := h.LinkByName(e.Master)
		if err != nil {
			return err
		}
		if err := h.LinkSetMaster(l, m); err != nil {
			return fmt.Errorf("%s master %s: %w", e.Name, e.Master, err)
		}
	}
	dad := "/proc/sys/net/ipv6/conf/" + e.Name + "/accept_dad"
	if err := e.NS.Do(func() error { return os.WriteFile(dad, []byte("0"), 0o644) }); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, cidr := range e.Addrs {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", cidr, e.Name, err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", e.Name, err)
	}
	return nil
}

// Ping sends one echo request from inside ns to addr, waiting at most a
// second for the answer, and returns ping's output.
func Ping(ns *nsutil.NS, addr string) (string, error) {
	var out []byte
	var err error
	if derr := ns.Do(func() error {
		out, err = exec.Command("ping", "-c", "1", "-W", "1", addr).CombinedOutput()
		return nil
	}); derr != nil {
		return "", derr
	}
	if err != nil {
		return string(out), fmt.Errorf("ping %s from %s: %w: %s", addr, filepath.Base(ns.Path()), err, out)
	}
	return string(out), nil
}

// SourceSeen sends a UDP datagram from inside from to dst (an address in
// to, port 9999) and returns the source address it arrived with: the pod's
// own, or the node's when masqueraded.
func SourceSeen(from, to *nsutil.NS, dst string) (string, error) {
	var pc net.PacketConn
	if err := to.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(dst, "9999"))
		return err
	}); err != nil {
		return "", err
	}
	defer func() { _ = pc.Close() }()
	if err := from.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(dst, "9999"))
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		_, err = c.Write([]byte("hello"))
		return err
	}); err != nil {
		return "", err
	}
	_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 16)
	_, src, err := pc.ReadFrom(buf)
	if err != nil {
		return "", fmt.Errorf("nothing arrived at %s: %w", dst, err)
	}
	host, _, _ := net.SplitHostPort(src.String())
	return host, nil
}

// PrivateLocks points the locks of this process and of every plugin it
// starts (pkg/lock: the environment is inherited) at a temporary directory
// of their own, instead of the host's /run/netns-cni/locks, and returns
// the function that removes it. For a test binary's TestMain, or a tool
// that runs plugins in sandboxes of its own. The directory is on tmpfs
// (/dev/shm) where there is one, as /run is: every lock makes and removes
// a file there.
func PrivateLocks() (cleanup func(), err error) {
	parent := ""
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		parent = "/dev/shm"
	}
	dir, err := os.MkdirTemp(parent, "netns-cni-locks-")
	if err != nil {
		return nil, err
	}
	if err := os.Setenv(lock.DirEnv, dir); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}
