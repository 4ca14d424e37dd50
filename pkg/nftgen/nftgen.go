// Package nftgen reads the nftables ruleset generation of a network
// namespace: a counter the kernel bumps with every committed change to any
// table, chain, rule, set or element (iptables-nft's included). Equal
// generations mean an unchanged ruleset, so rules found in place at one
// generation are still in place while it holds — what lets ADD skip
// reading back the network's rules on every call (pkg/plugin).
package nftgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/netns-cni/netns-cni/pkg/iptview"
)

// Gen returns the calling thread's namespace's ruleset generation. One
// request over a plain blocking netlink socket (vishvananda/netlink's,
// which the plugins use for everything else): ADD reads it twice, and
// anything heavier would cost what it saves.
func Gen() (uint32, error) {
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETGEN, 0)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: unix.AF_UNSPEC, Version: nl.NFNETLINK_V0})
	msgs, err := req.Execute(unix.NETLINK_NETFILTER, 0)
	if err != nil {
		return 0, fmt.Errorf("nftables: read the ruleset generation: %w", err)
	}
	for _, m := range msgs {
		if len(m) < 4 {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[4:])
		if err != nil {
			return 0, err
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.NFTA_GEN_ID && len(a.Value) == 4 {
				return binary.BigEndian.Uint32(a.Value), nil
			}
		}
	}
	return 0, errors.New("nftables: no ruleset generation in the answer")
}

// bootID names this boot; read once per process (an ADD stamps twice).
var bootID = sync.OnceValues(func() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b)), err
})

// netnsCookie is the calling thread's namespace's cookie (Linux 5.14 and
// later): unlike its inode number, never reused within a boot, so a
// namespace made after another went (a restarted node container) cannot
// pass for it while its generation counts up from 1 again.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}

// Stamp names the ruleset as it is now in the calling thread's namespace:
// the boot, the namespace (its cookie) and the generation. "" when it cannot tell, or
// when iptables-legacy holds tables here (x_tables, whose changes do not
// count in the generation).
func Stamp() string {
	if iptview.Legacy(nftables.TableFamilyIPv4) || iptview.Legacy(nftables.TableFamilyIPv6) {
		return ""
	}
	boot, err := bootID()
	if err != nil {
		return ""
	}
	cookie, err := netnsCookie()
	if err != nil {
		return ""
	}
	gen, err := Gen()
	if err != nil {
		return ""
	}
	return fmt.Sprintf("%s %d %d", boot, cookie, gen)
}
