package netconf

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"

	"github.com/netns-cni/netns-cni/pkg/nsutil"
)

// Links retired by older netns-cni versions. Those DELs took the host end
// down, marked it with RetiredAlias and left the delete to a detached
// reaper process (deleting a network device waits for an RCU barrier). A
// reaper killed with the runtime's cgroup stranded its link, and on two
// cores the reapers cost parallel DELs a third of their throughput while
// saving a sequential DEL 0–8 %. DEL now deletes in line; what follows
// removes what the old reapers left, wherever it is met: GC removes every
// retired link, DEL of the attachment removes its own, ADD one that holds
// the name it needs.

// RetiredAlias marks a host link an older version's DEL retired.
const RetiredAlias = "netns-cni:retired"

// ReapRetired deletes every retired link in the namespace (GC).
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
// container by the container end of a pair whose host end was retired: it
// deletes the pair (or finds it gone) and reports true. For any other link
// it reports false.
func ClearRetiredPeer(host, cont Handle, ifname string) (bool, error) {
	l, err := cont.LinkByName(ifname)
	if err != nil {
		return true, nil // gone meanwhile
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
