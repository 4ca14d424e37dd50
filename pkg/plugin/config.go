package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"unicode"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/netns-cni/netns-cni/pkg/ipam"
)

// NetConf holds the keys every netns-cni plugin understands. Each plugin's
// config struct embeds it and adds its own keys, with the reference plugins'
// JSON names so existing configs drop in.
type NetConf struct {
	CNIVersion   string          `json:"cniVersion"`
	Name         string          `json:"name"`
	Type         string          `json:"type"`
	Capabilities map[string]bool `json:"capabilities,omitempty"`
	DNS          types.DNS       `json:"dns"`

	// RawPrevResult is the previous plugin's result in a chain; PrevResult
	// is the same converted to the newest result type (nil when absent).
	RawPrevResult map[string]any  `json:"prevResult,omitempty"`
	PrevResult    *current.Result `json:"-"`

	// ValidAttachments is set for GC only.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`

	// LogFile sends the plugin's log there instead of stderr.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn (the default) or error.
	LogLevel string `json:"logLevel,omitempty"`

	// cniArgs is CNI_ARGS, for validators that read requests from it.
	cniArgs string
}

// CNIArgs is the CNI_ARGS the config was loaded with.
func (c *NetConf) CNIArgs() string { return c.cniArgs }

// Base returns the shared part of a plugin config.
func (c *NetConf) Base() *NetConf { return c }

// Config is a plugin config: a struct embedding NetConf.
type Config interface{ Base() *NetConf }

// Defaulter is a config that fills in defaults after decoding.
type Defaulter interface{ SetDefaults() }

// Validator is a config that checks itself. Validate returns every problem,
// each naming its JSON key; Load joins them into one code-7 error.
type Validator interface{ Validate() []error }

// Load decodes the config on stdin into a new T, then sets up logging,
// fills defaults, validates and parses prevResult, in that order, with a
// typed CNI error at each step: 6 for JSON that does not decode, 7 for a
// config that decodes but is wrong. Logging comes first so that a config
// that does not validate — the commonest failure — is logged to the
// config's logFile, with its network, like any other.
func Load[T any, P interface {
	*T
	Config
}](args *skel.CmdArgs) (P, error) {
	conf := P(new(T))
	if err := json.Unmarshal(args.StdinData, conf); err != nil {
		return nil, DecodeError("decode network config: %s", describeJSONError(err))
	}
	base := conf.Base()
	base.cniArgs = args.Args
	if err := setupLog(base.LogFile, base.LogLevel); err != nil {
		return nil, err
	}
	if d, ok := any(conf).(Defaulter); ok {
		d.SetDefaults()
	}
	if v, ok := any(conf).(Validator); ok {
		if errs := v.Validate(); len(errs) > 0 {
			msgs := make([]string, len(errs))
			for i, e := range errs {
				msgs[i] = e.Error()
			}
			return nil, invalid(errs, "invalid network config %q: %s", base.Name, strings.Join(msgs, "; "))
		}
	}
	if err := base.parsePrevResult(); err != nil {
		return nil, err
	}
	warnUnknownKeys(args.StdinData, conf)
	return conf, nil
}

// LoadLenient is Load for DEL and GC, which must remove what an earlier
// config made even when today's config no longer passes Load: an operator
// edited it, an upgrade added a rule, or the ADD it follows failed on it
// (the reference answers those DELs with success; a DEL error leaves a
// pod stuck Terminating). Only JSON that does not decode at all fails
// (code 6). A key of the wrong type is left at its zero value; every
// validation problem, a prevResult that does not parse and an unusable
// logFile or logLevel are logged at warn and otherwise ignored, and
// whatever Validate parsed is kept.
func LoadLenient[T any, P interface {
	*T
	Config
}](args *skel.CmdArgs) (P, error) {
	conf := P(new(T))
	var problems []string
	if err := json.Unmarshal(args.StdinData, conf); err != nil {
		var te *json.UnmarshalTypeError
		if !errors.As(err, &te) {
			return nil, DecodeError("decode network config: %s", describeJSONError(err))
		}
		problems = append(problems, describeJSONError(err))
	}
	base := conf.Base()
	base.cniArgs = args.Args
	if err := setupLog(base.LogFile, base.LogLevel); err != nil {
		problems = append(problems, err.Error())
	}
	if d, ok := any(conf).(Defaulter); ok {
		d.SetDefaults()
	}
	if v, ok := any(conf).(Validator); ok {
		for _, e := range v.Validate() {
			problems = append(problems, e.Error())
		}
	}
	if err := base.parsePrevResult(); err != nil {
		problems = append(problems, err.Error())
	}
	for _, p := range problems {
		slog.Warn("invalid config ignored: removing what can be found", "problem", p)
	}
	warnUnknownKeys(args.StdinData, conf)
	return conf, nil
}

func (c *NetConf) parsePrevResult() error {
	if c.RawPrevResult == nil {
		return nil
	}
	raw, err := json.Marshal(c.RawPrevResult)
	if err != nil {
		return DecodeError(`"prevResult": %v`, err)
	}
	res, err := version.NewResult(c.CNIVersion, raw)
	if err != nil {
		return DecodeError(`"prevResult": %v`, err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return DecodeError(`"prevResult": %v`, err)
	}
	c.PrevResult = cur
	return nil
}

// describeJSONError turns encoding/json's messages into ones that name the
// key: `"mtu": want int, got string`. The path encoding/json gives names
// embedded structs by their Go names (VethConf.mtu); JSON keys here are
// lowerCamel, so the parts that start with a capital go.
func describeJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		var keys []string
		for _, k := range strings.Split(te.Field, ".") {
			if k != "" && !unicode.IsUpper(rune(k[0])) {
				keys = append(keys, k)
			}
		}
		return fmt.Sprintf("%q: want %s, got %s", strings.Join(keys, "."), te.Type, te.Value)
	}
	return err.Error()
}

// invalid is the error for validation errs: code 7; code 4 when one of
// them is about CNI_ARGS (ipam.ArgsError), which the runtime set, not the
// config; code 6 when a value has the wrong JSON type.
func invalid(errs []error, format string, a ...any) *types.Error {
	var args, rest []string
	for _, e := range errs {
		if errors.As(e, new(ipam.ArgsError)) {
			args = append(args, e.Error())
		} else {
			rest = append(rest, e.Error())
		}
	}
	if len(args) > 0 {
		msg := "invalid CNI_ARGS (the runtime sets it): " + strings.Join(args, "; ")
		if len(rest) > 0 {
			msg += "; the network config has problems too: " + strings.Join(rest, "; ")
		}
		return EnvError("%s", msg)
	}
	if slices.ContainsFunc(errs, func(e error) bool {
		return errors.As(e, new(*json.UnmarshalTypeError)) || errors.As(e, new(*json.SyntaxError))
	}) {
		return DecodeError(format, a...)
	}
	return ConfigError(format, a...)
}
