package nsutil_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
	"github.com/netns-cni/netns-cni/pkg/nsutil/nstest"
)

func TestOpenRejectsWhatIsNotANetns(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		want       error
		what       string
	}{
		{"empty", "", nsutil.ErrNotExist, ""},
		{"missing", filepath.Join(dir, "nope"), nsutil.ErrNotExist, ""},
		{"missing parent", filepath.Join(regular, "x"), nsutil.ErrNotExist, ""},
		{"regular file", regular, nsutil.ErrNotNS, "a regular file"},
		{"directory", dir, nsutil.ErrNotNS, "a directory"},
		{"mount namespace", "/proc/self/ns/mnt", nsutil.ErrNotNS, "a namespace of another kind"},
		{"device", "/dev/null", nsutil.ErrNotNS, "a special file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := nsutil.Open(tc.path)
			if err == nil {
				n.Close()
				t.Fatalf("Open(%q) succeeded, want %v", tc.path, tc.want)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open(%q) = %v, want errors.Is %v", tc.path, err, tc.want)
			}
			var pe *nsutil.PathError
			if !errors.As(err, &pe) || pe.What != tc.what {
				t.Fatalf("Open(%q) = %#v, want *PathError with What %q", tc.path, err, tc.what)
			}
		})
	}
}

func TestOpenTargetRefusesOwnNamespace(t *testing.T) {
	_, err := nsutil.OpenTarget("/proc/self/ns/net")
	if !errors.Is(err, nsutil.ErrOwnNS) {
		t.Fatalf("OpenTarget(own) = %v, want ErrOwnNS", err)
	}

	sb := nstest.NewT(t)
	err = sb.Host.Do(func() error {
		_, err := nsutil.OpenTarget(sb.Host.Path())
		return err
	})
	if !errors.Is(err, nsutil.ErrOwnNS) {
		t.Fatalf("OpenTarget(host) inside host = %v, want ErrOwnNS", err)
	}
	pod := sb.PodT(t, "pod")
	err = sb.Host.Do(func() error {
		n, err := nsutil.OpenTarget(pod.Path())
		if err == nil {
			n.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("OpenTarget(pod) inside host: %v", err)
	}
}

func TestDoAndHandleActInTheNamespaceOnly(t *testing.T) {
	sb := nstest.NewT(t)
	pod := sb.PodT(t, "pod")

	h, err := pod.Handle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "va-" + sb.ID}, PeerName: "vb-" + sb.ID}
	if err := h.LinkAdd(dummy); err != nil {
		t.Fatalf("add veth in pod: %v", err)
	}

	// Visible from inside the pod through Do...
	err = pod.Do(func() error {
		_, err := net.InterfaceByName(dummy.Name)
		return err
	})
	if err != nil {
		t.Fatalf("veth not visible inside pod: %v", err)
	}
	// ...and neither in the host namespace nor in the test's own.
	err = sb.Host.Do(func() error {
		_, err := net.InterfaceByName(dummy.Name)
		return err
	})
	if err == nil {
		t.Fatal("veth leaked into the host namespace")
	}
	if _, err := net.InterfaceByName(dummy.Name); err == nil {
		t.Fatal("veth leaked into the machine's namespace")
	}
	// The caller's thread is back where it was.
	own, err := pod.IsCurrent()
	if err != nil || own {
		t.Fatalf("after Do the caller runs in the pod: own=%v err=%v", own, err)
	}
}

func TestCreateRemove(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: needs root to create network namespaces (CI runs as root)")
	}
	path := filepath.Join(t.TempDir(), "ns")
	n, err := nsutil.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if _, err := nsutil.Create(path); err == nil {
		t.Fatal("Create over an existing namespace succeeded")
	}
	if err := nsutil.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace file still there: %v", err)
	}
	if err := nsutil.Remove(path); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestIsNotFound(t *testing.T) {
	if !nsutil.IsNotFound(netlink.LinkNotFoundError{}) {
		t.Fatal("LinkNotFoundError is not 'not found'")
	}
	if nsutil.IsNotFound(errors.New("boom")) {
		t.Fatal("plain error counted as 'not found'")
	}
}
