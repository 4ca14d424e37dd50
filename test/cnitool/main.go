// Command cnitool drives CNI plugins the way a container runtime does,
// through libcni: it loads a network by name from NETCONFPATH, finds the
// plugins in CNI_PATH and runs ADD, CHECK, DEL, GC, STATUS or VERSION.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/netns-cni/netns-cni/pkg/inspect"

	"github.com/netns-cni/netns-cni/pkg/cli"
)

const usage = `Usage: cnitool [flags] COMMAND NETWORK [NETNS]
       cnitool help [COMMAND]
       cnitool --version

Runs the CNI network NETWORK (a .conflist or .conf in NETCONFPATH) against the
network namespace NETNS, exactly as a container runtime does.

Commands:
  add NETWORK NETNS      attach NETNS to the network; prints the result, and
                         the container ID it used on stderr
  check NETWORK NETNS    verify the attachment made by add
  del NETWORK [NETNS]    detach; NETNS may be omitted when it is gone
                         (then --container-id is required)
  gc NETWORK             release everything of the network that belongs to
                         no attachment named by --valid; --all releases all
  status NETWORK         ask whether the network is ready for add
  version NETWORK        list the CNI versions each plugin supports

Flags (each defaults to the environment variable named):
`

// commands says, per command, how many positional arguments follow the
// network (min, max) and what it does, for "cnitool help COMMAND".
var commands = map[string]struct {
	min, max int
	help     string
}{
	"add":     {1, 1, "add NETWORK NETNS: attach the namespace NETNS to NETWORK and print the result. The container ID is --container-id, or one derived from NETNS, printed on stderr."},
	"check":   {1, 1, "check NETWORK NETNS: verify the attachment add made (CNI CHECK with the cached result)."},
	"del":     {0, 1, "del NETWORK [NETNS]: detach. Without NETNS (the namespace is gone) --container-id names the attachment."},
	"gc":      {0, 0, "gc NETWORK (--valid CONTAINERID/IFNAME ... | --all): release every attachment of NETWORK not listed with --valid; --all lists none and releases all."},
	"status":  {0, 0, "status NETWORK: ask each plugin whether NETWORK could serve an ADD now."},
	"version": {0, 0, "version NETWORK: list the CNI versions each plugin of NETWORK speaks."},
}

type options struct {
	netconfPath, cniPath, ifname, cniArgs, capArgs, containerID, cacheDir string
	valid                                                                 attachments
	all                                                                   bool
	stderr                                                                io.Writer
}

// attachments collects repeated --valid CONTAINERID/IFNAME flags.
type attachments []types.GCAttachment

func (a *attachments) String() string { return fmt.Sprint(*a) }
func (a *attachments) Set(s string) error {
	id, ifname, ok := strings.Cut(s, "/")
	if !ok || id == "" || ifname == "" {
		return fmt.Errorf("want CONTAINERID/IFNAME, got %q", s)
	}
	*a = append(*a, types.GCAttachment{ContainerID: id, IfName: ifname})
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(argv []string, stdout, stderr io.Writer) int {
	o := options{stderr: stderr}
	fs := flag.NewFlagSet("cnitool", flag.ContinueOnError)
	fs.SetOutput(stderr)
	printUsage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprint(w, usage)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	fs.Usage = func() { printUsage(stdout) } // -h, --help: asked for, so on stdout
	fs.StringVar(&o.netconfPath, "netconfpath", envOr("NETCONFPATH", "/etc/cni/net.d"), "directory of network configs (NETCONFPATH)")
	fs.StringVar(&o.cniPath, "cni-path", envOr("CNI_PATH", "/opt/cni/bin"), "colon-separated plugin directories (CNI_PATH)")
	fs.StringVar(&o.ifname, "ifname", envOr("CNI_IFNAME", "eth0"), "interface name in the namespace (CNI_IFNAME)")
	fs.StringVar(&o.cniArgs, "args", os.Getenv("CNI_ARGS"), "extra arguments, K=V;K2=V2 (CNI_ARGS)")
	fs.StringVar(&o.capArgs, "cap-args", os.Getenv("CAP_ARGS"), "capability arguments as a JSON object (CAP_ARGS)")
	fs.StringVar(&o.containerID, "container-id", os.Getenv("CNI_CONTAINERID"), "container ID; default: derived from NETNS (CNI_CONTAINERID)")
	fs.StringVar(&o.cacheDir, "cache-dir", envOr("CNI_CACHE_DIR", "/var/lib/cni"), "libcni result cache directory (CNI_CACHE_DIR)")
	fs.Var(&o.valid, "valid", "for gc: an attachment to keep, CONTAINERID/IFNAME; repeatable")
	fs.BoolVar(&o.all, "all", false, "for gc: keep no attachment (release everything of the network)")

	// Flags may come before or after the positional arguments.
	pos, code, done := cli.Parse(fs, argv, stdout, "cnitool (netns-cni)")
	if done {
		return code
	}
	if len(pos) == 0 {
		fmt.Fprintln(stderr, "cnitool: no command; want add, check, del, gc, status or version (cnitool help)")
		return 2
	}
	cmd := pos[0]
	if cmd == "help" {
		if len(pos) == 1 {
			fs.Usage()
			return 0
		}
		c, ok := commands[pos[1]]
		if !ok {
			fmt.Fprintf(stderr, "cnitool: help: unknown command %q; want add, check, del, gc, status or version\n", pos[1])
			return 2
		}
		synopsis, what, _ := strings.Cut(c.help, ": ")
		fmt.Fprintf(stdout, "Usage: cnitool [flags] %s\n\n%s\n\nFlags (each defaults to the environment variable named):\n", synopsis, what)
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
		return 0
	}
	// The command and its arguments are checked before any config is read.
	c, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "cnitool: unknown command %q; want add, check, del, gc, status or version (cnitool help)\n", cmd)
		return 2
	}
	if n := len(pos) - 2; n < c.min || n > c.max {
		fmt.Fprintf(stderr, "cnitool: %s takes %s\nUsage: cnitool [flags] %s\n", cmd, arity(c.min, c.max), c.help)
		return 2
	}
	if cmd == "gc" && len(o.valid) == 0 && !o.all {
		fmt.Fprintln(stderr, "cnitool: gc without --valid would release every attachment of the network; name those to keep with --valid CONTAINERID/IFNAME, or say --all")
		return 2
	}
	network := pos[1]
	netns := ""
	if len(pos) > 2 {
		netns = pos[2]
	}
	if err := o.do(cmd, network, netns, stdout); err != nil {
		fmt.Fprintf(stderr, "cnitool: %s %s: %v\n", cmd, network, err)
		var ce *types.Error
		if errors.As(err, &ce) {
			_ = json.NewEncoder(stdout).Encode(ce)
		}
		return 1
	}
	return 0
}

func arity(min, max int) string {
	switch {
	case min == max && min == 0:
		return "NETWORK and nothing more"
	case min == max:
		return "NETWORK and NETNS"
	}
	return "NETWORK and at most NETNS"
}

// loadNetwork is libcni's LoadNetworkConf, with an error that helps: a
// network not found names the networks the directory has, and the files
// in it that do not parse (one of them may be the network asked for).
// (libcni gives up at the first file that does not parse, even when
// another holds the network: that one is loaded here.)
func (o *options) loadNetwork(network string) (*libcni.NetworkConfigList, error) {
	list, err := libcni.LoadNetworkConf(o.netconfPath, network)
	if err == nil {
		return list, nil
	}
	if _, serr := os.Stat(o.netconfPath); serr != nil {
		return nil, fmt.Errorf("network configs (--netconfpath, NETCONFPATH): %w", serr)
	}
	files, ferr := libcni.ConfFiles(o.netconfPath, []string{".conf", ".conflist", ".json"})
	if ferr != nil {
		return nil, fmt.Errorf("load network config from %s: %w", o.netconfPath, ferr)
	}
	var names, broken []string
	for _, f := range files {
		l, perr := inspect.ConfFile(f)
		switch {
		case perr != nil:
			broken = append(broken, fmt.Sprintf("%s: %v", f, perr))
		case l.Name == network:
			return l, nil
		case !slices.Contains(names, l.Name): // two files may name one network
			names = append(names, l.Name)
		}
	}
	msg := fmt.Sprintf("no network named %q in %s", network, o.netconfPath)
	if len(names) > 0 {
		msg += " (it has: " + strings.Join(names, ", ") + ")"
	}
	if len(broken) > 0 {
		msg += "; files that do not parse, which may hold it: " + strings.Join(broken, "; ")
	}
	return nil, errors.New(msg)
}

func (o *options) do(cmd, network, netns string, stdout io.Writer) error {
	list, err := o.loadNetwork(network)
	if err != nil {
		return err
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(o.cniPath), o.cacheDir, nil)
	ctx := context.Background()

	switch cmd {
	case "gc":
		return cni.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: o.valid})
	case "status":
		if err := cni.GetStatusNetworkList(ctx, list); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ready\n", network)
		return nil
	case "version":
		for _, p := range list.Plugins {
			info, err := cni.GetVersionInfo(ctx, p.Network.Type)
			if err != nil {
				return fmt.Errorf("%s: %w", p.Network.Type, err)
			}
			fmt.Fprintf(stdout, "%s: %s\n", p.Network.Type, strings.Join(info.SupportedVersions(), ", "))
		}
		return nil
	}

	rt, err := o.runtimeConf(cmd, netns)
	if err != nil {
		return err
	}
	switch cmd {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		if err := res.PrintTo(stdout); err != nil {
			return err
		}
		_, err = fmt.Fprintln(stdout) // PrintTo ends without one
		return err
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	default:
		return cni.DelNetworkList(ctx, list, rt)
	}
}

func (o *options) runtimeConf(cmd, netns string) (*libcni.RuntimeConf, error) {
	if netns == "" && cmd != "del" {
		return nil, errors.New("NETNS is required")
	}
	id := o.containerID
	if id == "" {
		if netns == "" {
			return nil, errors.New("del without NETNS needs --container-id (or CNI_CONTAINERID)")
		}
		sum := sha512.Sum512([]byte(netns))
		id = "cnitool-" + hex.EncodeToString(sum[:])[:20]
		if cmd == "add" && o.stderr != nil {
			fmt.Fprintf(o.stderr, "cnitool: container ID %s (del without NETNS needs --container-id %s)\n", id, id)
		}
	}
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: o.ifname}
	if o.cniArgs != "" {
		for _, kv := range strings.Split(o.cniArgs, ";") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("CNI_ARGS: %q is not K=V", kv)
			}
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	if o.capArgs != "" {
		if err := json.Unmarshal([]byte(o.capArgs), &rt.CapabilityArgs); err != nil {
			return nil, fmt.Errorf("CAP_ARGS: not a JSON object: %w", err)
		}
	}
	return rt, nil
}
