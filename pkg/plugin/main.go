// Package plugin is the CNI glue every netns-cni plugin shares: the
// dispatcher that reads the CNI_* environment and stdin and calls the verb
// (Main, Run), configuration loading with typed errors, result conversion
// to the requested version and logging; and, for the veth plugins, the
// verbs themselves, written once around a small Driver (VethMain: ADD as
// named steps with their undo, DEL in one order, CHECK, GC, STATUS) and
// the network's host-wide state (Network). A veth plugin's main package is
// its config, which implements Driver.
package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/utils"
	"github.com/containernetworking/cni/pkg/version"

	nversion "github.com/netns-cni/netns-cni/pkg/version"
)

// SupportedVersions are the CNI spec versions every netns-cni plugin speaks.
var SupportedVersions = version.All.SupportedVersions()

// Plugin says what a plugin does for each verb. Add returns the result; the
// dispatcher converts it to the version the config asked for and prints it.
// The others return only an error. A nil verb succeeds doing nothing.
type Plugin struct {
	// Name is the binary name, used in logs and in the about text.
	Name string
	// About is one line on what the plugin does, printed to stderr when the
	// binary is run by hand without CNI_COMMAND.
	About  string
	Add    func(*skel.CmdArgs) (types.Result, error)
	Del    func(*skel.CmdArgs) error
	Check  func(*skel.CmdArgs) error
	GC     func(*skel.CmdArgs) error
	Status func(*skel.CmdArgs) error
}

// Main runs the plugin as a CNI binary and exits.
func Main(p Plugin) {
	// A plugin lives for milliseconds and allocates little: garbage
	// collection would cost more than the memory it frees.
	debug.SetGCPercent(-1)
	os.Exit(Run(p, os.Getenv, os.Stdin, os.Stdout, os.Stderr))
}

// verbs lists what each command needs from the environment (spec 1.1.0,
// "Parameters" and each verb's section): CNI_NETNS is optional for DEL,
// since the namespace may be gone, and CNI_PATH for ADD, CHECK and DEL
// (the reference's skel requires it; only a delegated IPAM plugin needs
// it, and says so when it is missing).
var verbs = map[string]struct {
	required   []string
	minVersion string
}{
	"ADD":     {[]string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}, ""},
	"DEL":     {[]string{"CNI_CONTAINERID", "CNI_IFNAME"}, ""},
	"CHECK":   {[]string{"CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"}, "0.4.0"},
	"GC":      {[]string{"CNI_PATH"}, "1.1.0"},
	"STATUS":  {nil, "1.1.0"},
	"VERSION": {nil, ""},
}

// errorOutput is the spec's error object: the library's types.Error lacks
// cniVersion.
type errorOutput struct {
	CNIVersion string `json:"cniVersion"`
	Code       uint   `json:"code"`
	Msg        string `json:"msg"`
	Details    string `json:"details,omitempty"`
}

// Run is Main without the exit, for tests: it returns the exit code.
//
// It does the work of the library's skel dispatcher, plus what the spec asks
// and skel does not: VERSION answers with the cniVersion it was given, every
// error carries the config's cniVersion and names the variable or key at
// fault, and nothing is done before the whole input was checked (skel checks
// for the plugin's own namespace only after ADD ran).
func Run(p Plugin, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	quietDefault(stderr)
	cniVersion := version.Current()
	fail := func(e *types.Error) int {
		out := errorOutput{CNIVersion: cniVersion, Code: e.Code, Msg: e.Msg, Details: e.Details}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "    ")
		_ = enc.Encode(out)
		return 1
	}

	cmd := getenv("CNI_COMMAND")
	command = cmd
	if cmd == "" {
		// Run by hand: say what this is, as the reference plugins do.
		fmt.Fprintf(stderr, "%s %s: %s\nCNI protocol versions supported: %s\n",
			p.Name, nversion.Version, p.About, strings.Join(SupportedVersions, ", "))
		return 0
	}
	attrs := []any{"plugin", p.Name, "cmd", cmd}
	var data []byte
	// A failure before the verb runs is logged like one after: to the
	// config's logFile when the config got far enough to name one.
	failEarly := func(e *types.Error) int {
		var keys struct{ LogFile, LogLevel any }
		_ = json.Unmarshal(data, &keys)
		file, _ := keys.LogFile.(string)
		level, _ := keys.LogLevel.(string)
		withLogAttrs(attrs...)
		_ = setupLog(file, level)
		slog.Warn(cmd+" failed", "code", e.Code, "error", e.Msg)
		return fail(e)
	}
	verb, ok := verbs[cmd]
	if !ok {
		return failEarly(EnvError("CNI_COMMAND: unknown command %q, want ADD, DEL, CHECK, GC, STATUS or VERSION", cmd))
	}
	args, envErr := readEnv(getenv, verb.required)
	attrs = append(attrs, "container", args.ContainerID)
	if args.IfName != "" {
		attrs = append(attrs, "ifname", args.IfName)
	}
	if args.Netns != "" {
		attrs = append(attrs, "netns", args.Netns)
	}
	if tp := getenv("TRACEPARENT"); tp != "" { // newer libcni passes the runtime's W3C trace context
		attrs = append(attrs, "traceparent", tp)
	}

	data, err := io.ReadAll(stdin)
	if err != nil {
		return failEarly(types.NewError(types.ErrIOFailure, fmt.Sprintf("read network config from stdin: %v", err), ""))
	}
	args.StdinData = data

	var head struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
	}
	if cmd == "VERSION" && len(strings.TrimSpace(string(data))) == 0 {
		head.CNIVersion = version.Current()
	} else if err := json.Unmarshal(data, &head); err != nil {
		if cmd == "VERSION" {
			return fail(DecodeError("decode network config from stdin: %v", err))
		}
		return failEarly(DecodeError("decode network config from stdin: %s", describeJSONError(err)))
	} else if head.CNIVersion == "" {
		head.CNIVersion = "0.1.0" // the spec's default for a config without one
	}
	cniVersion = head.CNIVersion
	if head.Name != "" {
		attrs = append(attrs, "network", head.Name)
	}

	if cmd == "VERSION" {
		return printJSON(stdout, struct {
			CNIVersion        string   `json:"cniVersion"`
			SupportedVersions []string `json:"supportedVersions"`
		}{cniVersion, SupportedVersions})
	}
	if envErr != nil {
		return failEarly(envErr)
	}
	if e := checkName(head.Name); e != nil {
		return failEarly(e)
	}
	if !slices.Contains(SupportedVersions, cniVersion) {
		return failEarly(VersionError(`"cniVersion": %q is not supported; this plugin supports %s`,
			cniVersion, strings.Join(SupportedVersions, ", ")))
	}
	if verb.minVersion != "" {
		if ok, _ := version.GreaterThanOrEqualTo(cniVersion, verb.minVersion); !ok {
			return failEarly(VersionError("%s needs cniVersion %s or later, the config has %s", cmd, verb.minVersion, cniVersion))
		}
	}

	withLogAttrs(attrs...)
	summary = nil
	start := time.Now()
	err = call(p, cmd, args, cniVersion, stdout)
	// One line per verb: what it acted on, the outcome and the time.
	done := append([]any{"took", time.Since(start).Round(time.Microsecond)}, summary...)
	if err != nil {
		e := CNIError(err)
		slog.Warn(cmd+" failed", append([]any{"code", e.Code, "error", e.Msg}, done...)...)
		return fail(e)
	}
	slog.Info(cmd+" ok", done...)
	if slog.Default().Enabled(context.Background(), slog.LevelDebug) {
		slog.Debug("resources", "peakRSS", peakRSS())
	}
	return 0
}

// peakRSS is the process's peak resident set size as /proc/self/status
// tells it (VmHWM): the plugin's own, unlike getrusage's maxrss, which a
// child started with vfork inherits from its parent.
func peakRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}

// summary are attributes a verb adds to its one log line (the addresses,
// the host link), with Note.
var summary []any

// Note adds attributes to the verb's summary log line.
func Note(attrs ...any) { summary = append(summary, attrs...) }

func call(p Plugin, cmd string, args *skel.CmdArgs, cniVersion string, stdout io.Writer) error {
	var fn func(*skel.CmdArgs) error
	switch cmd {
	case "ADD":
		if p.Add == nil {
			return nil
		}
		res, err := p.Add(args)
		if err != nil {
			return err
		}
		return PrintResult(stdout, res, cniVersion)
	case "DEL":
		fn = p.Del
	case "CHECK":
		fn = p.Check
	case "GC":
		fn = p.GC
	case "STATUS":
		fn = p.Status
	}
	if fn == nil {
		return nil
	}
	return fn(args)
}

// readEnv collects the CNI_* variables and checks those cmd requires. It
// names every missing variable at once.
func readEnv(getenv func(string) string, required []string) (*skel.CmdArgs, *types.Error) {
	del := getenv("CNI_COMMAND") == "DEL"
	args := &skel.CmdArgs{
		ContainerID:   getenv("CNI_CONTAINERID"),
		Netns:         getenv("CNI_NETNS"),
		IfName:        getenv("CNI_IFNAME"),
		Args:          getenv("CNI_ARGS"),
		Path:          getenv("CNI_PATH"),
		NetnsOverride: getenv("CNI_NETNS_OVERRIDE"),
	}
	var missing []string
	for _, name := range required {
		if getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return args, EnvError("required environment variables not set: %s", strings.Join(missing, ", "))
	}
	if slices.Contains(required, "CNI_CONTAINERID") {
		if e := utils.ValidateContainerID(args.ContainerID); e != nil {
			return args, EnvError("CNI_CONTAINERID %q: must start with a letter or digit and hold only letters, digits, '_', '.' and '-'", args.ContainerID)
		}
	}
	if slices.Contains(required, "CNI_IFNAME") {
		if e := utils.ValidateInterfaceName(args.IfName); e != nil {
			return args, EnvError("CNI_IFNAME %q: %s (at most 15 bytes; not '.' or '..'; no '/', ':' or white space)", args.IfName, e.Msg)
		}
		// An ADD with it always failed, so a DEL finds nothing of it to
		// remove, and DEL must not fail for that (nor for CNI_ARGS below).
		if strings.Contains(args.IfName, "%") && !del {
			return args, EnvError("CNI_IFNAME %q: '%%' makes the kernel pick the name (eth%%d becomes eth0), so the interface could not be found again; give the name itself", args.IfName)
		}
	}
	if !del {
		for _, pair := range strings.Split(args.Args, ";") {
			if pair != "" && !strings.Contains(pair, "=") {
				return args, EnvError("CNI_ARGS %q: %q is not KEY=VALUE (pairs are separated by ';')", args.Args, pair)
			}
		}
	}
	return args, nil
}

func checkName(name string) *types.Error {
	if name == "" {
		return ConfigError(`"name": missing; every network config needs a name`)
	}
	if e := utils.ValidateNetworkName(name); e != nil {
		return ConfigError(`"name": %q must start with a letter or digit and hold only letters, digits, '_', '.' and '-'`, name)
	}
	return nil
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}
