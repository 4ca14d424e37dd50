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

	"github.com/netns-cni/netns-cni/pkg/netconf"
	"github.com/netns-cni/netns-cni/pkg/nsutil"
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
	return &Sandbox{Dir: dir, Host: host, ID: id}, nil
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
	host, err := s.Host.Handle()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	oh, err := out.Handle()
	if err != nil {
		return nil, err
	}
	defer oh.Close()
	hl, ol, err := netconf.CreateVeth(host, oh, out, netconf.VethSpec{HostName: "uplink", ContName: "eth0"})
	if err != nil {
		return nil, err
	}
	// Usable link-local addresses at once on both ends (see
	// netconf.DisableDAD), so the first IPv6 packet through gets an answer.
	for _, x := range []struct {
		ns   *nsutil.NS
		name string
	}{{s.Host, "uplink"}, {out, "eth0"}} {
		if err := x.ns.Do(func() error { return netconf.DisableDAD(x.name) }); err != nil {
			return nil, err
		}
	}
	for _, x := range []struct {
		h    nsutil.Handle
		l    netlink.Link
		a, b string
	}{{host, hl, HostUplink4 + "/24", HostUplink6 + "/64"}, {oh, ol, Outside4 + "/24", Outside6 + "/64"}} {
		for _, cidr := range []string{x.a, x.b} {
			ip, n, _ := net.ParseCIDR(cidr)
			n.IP = ip
			if err := netconf.AddAddr(x.h, x.l, n, true); err != nil {
				return nil, err
			}
		}
		if err := netconf.SetUp(x.h, x.l); err != nil {
			return nil, err
		}
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
