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

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
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
	for _, f := range []string{"/proc/thread-self/net/ip_tables_names", "/proc/thread-self/net/ip6_tables_names"} {
		if b, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(b)) != "" {
			return ""
		} else if err != nil && !os.IsNotExist(err) {
			return ""
		}
	}
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
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
	return fmt.Sprintf("%s %d %d", strings.TrimSpace(string(boot)), cookie, gen)
}
