// Command netns-cni answers an operator's questions about a node's
// container networking — what is attached, what leaked, how full the
// pools are — and repairs what leaked. It reads the node as it is (the
// conflists, each network's store, host links, netns-cni's NAT state,
// libcni's cache) and works on the reference plugins' attachments too.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/netns-cni/netns-cni/pkg/cli"
	"github.com/netns-cni/netns-cni/pkg/inspect"
)

const usage = `Usage: netns-cni [flags] COMMAND

Commands:
  list     the attachments: network, container, ifname, addresses, host link,
           namespace (and whether it exists), age
  audit    what is wrong: reservations whose container is gone, reservations
           older than the boot, cache entries whose namespace is gone, host
           links without a reservation, NAT state of networks without an
           attachment, links older versions retired, pools nearly full,
           unknown config keys. Exit status 1 when anything is found.
  repair   fix what audit found and can fix: shows each action; acts only
           with --yes. Never touches an attachment whose namespace or host
           link still exists; DELs through the network's own plugins, which
           take the locks they always take.
  pools    per network and range set: addresses used and free
  help     this text (every command's; flags may come before or after it)

It reads the node as seen from the network namespace it runs in: that
namespace's links and rules are the "host" (run it with ip netns exec, or
nsenter -n, to inspect another). Stores and the cache are read from the
paths below, whatever the namespace.

Flags:
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type options struct {
	confDir, cacheDir, cniPath string
	json, yes                  bool
}

func run(argv []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("netns-cni", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { // asked for (-h, help): on stdout
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	fs.StringVar(&o.confDir, "conf-dir", "/etc/cni/net.d", "the runtime's CNI config directory")
	fs.StringVar(&o.cacheDir, "cache-dir", "/var/lib/cni", "libcni's cache directory")
	fs.StringVar(&o.cniPath, "cni-path", defaultCNIPath(), "where repair finds the plugins (colon-separated): netns-cni's own directory, then the usual ones")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.BoolVar(&o.yes, "yes", false, "repair: act (without it, repair only shows what it would do)")
	// Flags may come before or after the positional arguments.
	pos, code, done := cli.Parse(fs, argv, stdout, "netns-cni")
	if done {
		return code
	}
	commands := map[string]func(*inspect.Node, io.Writer, io.Writer) int{
		"list": o.list, "audit": o.audit, "repair": o.repair, "pools": o.pools,
	}
	const want = "want list, audit, repair, pools or help (netns-cni help)"
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "netns-cni: no command;", want)
		return 2
	}
	cmd := commands[pos[0]]
	switch {
	case pos[0] == "help" && (len(pos) == 1 || len(pos) == 2 && commands[pos[1]] != nil):
		fs.Usage() // one text for every command
		return 0
	case pos[0] == "help" && len(pos) == 2:
		fmt.Fprintf(stderr, "netns-cni: help: unknown command %q; %s\n", pos[1], want)
		return 2
	case cmd == nil && pos[0] != "help":
		fmt.Fprintf(stderr, "netns-cni: unknown command %q; %s\n", pos[0], want)
		return 2
	case pos[0] == "help":
		fmt.Fprintf(stderr, "netns-cni: help takes at most one command, got %q\n", pos[1:])
		return 2
	case len(pos) > 1:
		fmt.Fprintf(stderr, "netns-cni: %s takes no arguments, got %q\n", pos[0], pos[1:])
		return 2
	}
	node, err := inspect.Read(o.confDir, o.cacheDir)
	if err != nil {
		fmt.Fprintln(stderr, "netns-cni:", err)
		return 1
	}
	return cmd(node, stdout, stderr)
}

// defaultCNIPath is where repair looks for plugins unless told: the
// directory netns-cni itself is in (installed beside the plugins, or run
// from a build's bin/), then the usual plugin directories.
func defaultCNIPath() string {
	dirs := []string{"/opt/cni/bin", "/usr/lib/cni"}
	if exe, err := os.Executable(); err == nil && !slices.Contains(dirs, filepath.Dir(exe)) {
		dirs = append([]string{filepath.Dir(exe)}, dirs...)
	}
	return strings.Join(dirs, string(filepath.ListSeparator))
}

// printJSON prints v; an empty list is [], never null.
func (o *options) printJSON(w io.Writer, v any) int {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []any{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func (o *options) list(n *inspect.Node, stdout, _ io.Writer) int {
	if o.json {
		return o.printJSON(stdout, n.Attachments)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tCONTAINER\tIFNAME\tADDRESSES\tHOST LINK\tNETNS\tAGE\tPORTS")
	for _, a := range n.Attachments {
		ns := a.Netns
		switch {
		case ns == "":
			ns = "-"
		case !a.NetnsExists:
			ns += " (gone)"
		}
		age := "-"
		if !a.Since.IsZero() {
			age = time.Since(a.Since).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", a.Network, short(a.ContainerID), a.IfName,
			dash(strings.Join(a.Addresses, ",")), dash(a.HostLink), ns, age, dash(strings.Join(a.Ports, ", ")))
	}
	_ = tw.Flush()
	return 0
}

func (o *options) audit(n *inspect.Node, stdout, _ io.Writer) int {
	problems := n.Audit()
	if o.json {
		o.printJSON(stdout, problems)
	} else if len(problems) == 0 {
		fmt.Fprintln(stdout, "nothing wrong")
	} else {
		for _, p := range problems {
			fmt.Fprintf(stdout, "%s %s\n    %s\n    fix: %s\n", p.Kind, subject(p), p.Detail, p.Fix)
		}
	}
	if len(problems) > 0 {
		return 1
	}
	return 0
}

func (o *options) repair(n *inspect.Node, stdout, stderr io.Writer) int {
	problems := n.Audit()
	code := 0
	type action struct {
		inspect.Problem
		Done  bool   `json:"done"`
		Error string `json:"error,omitempty"`
	}
	var actions []action
	for _, p := range problems {
		a := action{Problem: p}
		switch {
		case !p.Repairable:
			if !o.json {
				fmt.Fprintf(stdout, "leave  %s %s: %s\n", p.Kind, subject(p), p.Fix)
			}
		case !o.yes:
			if !o.json {
				fmt.Fprintf(stdout, "would  %s %s: %s\n", p.Kind, subject(p), p.Fix)
			}
		default:
			if err := n.Repair(p, filepath.SplitList(o.cniPath)); err != nil {
				a.Error, code = err.Error(), 1
				if !o.json {
					fmt.Fprintf(stdout, "FAILED %s %s: %v\n", p.Kind, subject(p), err)
				}
			} else {
				a.Done = true
				if !o.json {
					fmt.Fprintf(stdout, "done   %s %s: %s\n", p.Kind, subject(p), p.Fix)
				}
			}
		}
		actions = append(actions, a)
	}
	if o.json {
		o.printJSON(stdout, actions)
	} else if len(problems) == 0 {
		fmt.Fprintln(stdout, "nothing to repair")
	} else if !o.yes {
		fmt.Fprintln(stderr, "netns-cni: a dry run; repair --yes acts")
	}
	return code
}

func (o *options) pools(n *inspect.Node, stdout, _ io.Writer) int {
	type row struct {
		Network string `json:"network"`
		inspect.Pool
		Free uint64 `json:"free"`
	}
	var rows []row
	for _, net := range n.Networks {
		for _, p := range net.Pools {
			rows = append(rows, row{net.Name, p, p.Size - p.Used})
		}
	}
	if o.json {
		return o.printJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NETWORK\tRANGES\tUSED\tFREE\tSIZE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.Network, r.Ranges, r.Used, count(r.Free), count(r.Size))
	}
	_ = tw.Flush()
	if len(rows) > 0 {
		fmt.Fprintln(stdout, "(SIZE: the addresses that can be handed out, RANGES without each range's gateway)")
	}
	return 0
}

// count prints an address count; the store counts up to 2^63 (an IPv6
// /64 and wider), which it prints as such rather than as 2^63-1.
func count(n uint64) string {
	if n >= 1<<63-1<<32 {
		return "≥2^63"
	}
	return strconv.FormatUint(n, 10)
}

func subject(p inspect.Problem) string {
	s := p.Network
	if s == "" {
		s = p.File
	}
	if p.ContainerID != "" {
		s += " " + p.ContainerID + "/" + p.IfName
	}
	return s
}

func short(id string) string {
	if len(id) > 20 {
		return id[:20] + "…"
	}
	return id
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
