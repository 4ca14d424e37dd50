package netconf

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Deleting a network device is slow: the kernel waits for an RCU barrier
// before RTM_DELLINK returns, 10–40 ms on a small VM, most of a DEL. So DEL
// retires the host end instead — it takes it down at once (traffic stops,
// its routes go) and marks it retired, so that nothing counts it as an
// attachment any more — and leaves the delete itself to a detached reaper
// process, so the runtime does not wait for the barrier. Whatever finds a
// retired link later (an ADD that needs its name, GC) deletes it on the
// spot, so a reaper that never ran leaks nothing for long.

// RetiredAlias marks a host link whose attachment is gone.
const RetiredAlias = "netns-cni:retired"

// ReapEnv carries "<ifindex>:<name>" to a reaper process.
const ReapEnv = "NETNS_CNI_REAP"

// Retire takes the host end of an attachment out of service and starts a
// reaper to delete it. If no reaper can be started it deletes the link
// itself. A link that is already gone is fine.
func Retire(h Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		if nsutil.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := h.LinkSetAlias(l, RetiredAlias); err != nil {
		return DelLink(h, name)
	}
	if err := h.LinkSetDown(l); err != nil && !nsutil.IsNotFound(err) {
		return DelLink(h, name)
	}
	if err := startReaper(l); err != nil {
		slog.Info("no reaper, deleting in line", "link", name, "error", err)
		return DelLink(h, name)
	}
	return nil
}

func startReaper(l netlink.Link) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	env := append(os.Environ(), ReapEnv+"="+strconv.Itoa(l.Attrs().Index)+":"+l.Attrs().Name)
	p, err := os.StartProcess(self, []string{self}, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{null, null, null},
		// Its own session: the runtime's wait for the plugin, and any signal
		// to the plugin's process group, do not reach it.
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	if err != nil {
		return err
	}
	return p.Release()
}

// Reap is the reaper's work: delete the link named in ReapEnv if it is
// still the retired link (an ifindex can be reused). It reports whether
// the process was started as a reaper.
func Reap() (bool, error) {
	v := os.Getenv(ReapEnv)
	if v == "" {
		return false, nil
	}
	idx, name, _ := strings.Cut(v, ":")
	i, err := strconv.Atoi(idx)
	if err != nil {
		return true, fmt.Errorf("%s=%q: %w", ReapEnv, v, err)
	}
	h, err := nsutil.CurrentHandle()
	if err != nil {
		return true, err
	}
	defer h.Close()
	l, err := h.LinkByIndex(i)
	if err != nil || l.Attrs().Name != name || l.Attrs().Alias != RetiredAlias {
		return true, nil // gone already, or no longer ours
	}
	if err := h.LinkDel(l); err != nil && !nsutil.IsNotFound(err) {
		return true, err
	}
	return true, nil
}

// ReapRetired deletes every retired link in the namespace now (GC).
func ReapRetired(h Handle) error {
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().Alias == RetiredAlias {
			if err := h.LinkDel(l); err != nil && !nsutil.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete retired %s: %w", l.Attrs().Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// ClearRetiredPeer handles an ADD that finds CNI_IFNAME taken in the
// container by the container end of a pair whose host end was retired
// moments ago: it deletes the pair now (or finds it already going) and
// reports true. For any other link it reports false.
func ClearRetiredPeer(host, cont Handle, ifname string) (bool, error) {
	l, err := cont.LinkByName(ifname)
	if err != nil {
		return true, nil // gone meanwhile: its reaper was quicker
	}
	if _, ok := l.(*netlink.Veth); !ok || l.Attrs().ParentIndex == 0 {
		return false, nil
	}
	peer, err := host.LinkByIndex(l.Attrs().ParentIndex)
	if nsutil.IsNotFound(err) {
		return true, nil // the host end is gone, the container end goes with it
	}
	if err != nil || peer.Attrs().Alias != RetiredAlias {
		return false, nil
	}
	if err := host.LinkDel(peer); err != nil && !nsutil.IsNotFound(err) {
		return false, fmt.Errorf("delete retired %s: %w", peer.Attrs().Name, err)
	}
	return true, nil
}
